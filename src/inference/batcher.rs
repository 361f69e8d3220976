//! Dynamic batching: requests that arrive close together run as one batch.
//!
//! There is no batching thread. A request that finds nobody forming a batch becomes the
//! leader: it waits up to `max_queue_delay` for more requests (or until `max_batch_size` rows or
//! a preferred size are queued), takes the oldest request and every compatible one behind it
//! (same inputs, types and non-batch shapes, same outputs), runs them as one, and hands each
//! request its rows. Requests left behind (incompatible, or beyond the batch size) are led by
//! one of their own. The queue is bounded: a request that finds it full is refused at once.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::manager::ServingError;
use super::tensor::{NamedTensor, TensorData};

/// Batching settings of one model version.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// Most rows in one run.
    pub max_batch: usize,
    /// Row counts worth running at once without waiting longer.
    pub preferred: Vec<usize>,
    /// Longest wait for a batch to fill.
    pub max_delay: Duration,
    /// Most requests accepted and not yet running.
    pub max_queue: usize,
}

/// Runs merged tensors: the inputs and the outputs to produce.
pub type RunTensors<'a> =
    &'a dyn Fn(&[NamedTensor], &[String]) -> Result<Vec<NamedTensor>, ServingError>;

/// A request's answer and its time in the queue.
type Reply<R> = Result<(R, Duration), ServingError>;

struct Job<J, R> {
    id: u64,
    payload: J,
    rows: usize,
    enqueued: Instant,
    reply: Sender<Reply<R>>,
}

struct State<J, R> {
    waiting: VecDeque<Job<J, R>>,
    leading: bool,
    next_id: u64,
}

/// Gathers concurrent requests into batches (see the module documentation). `J` is a request,
/// `R` its answer; `compatible` says which requests may share a batch and `rows` how many rows a
/// request brings.
pub struct Coalescer<J, R> {
    policy: BatchPolicy,
    compatible: fn(&J, &J) -> bool,
    rows: fn(&J) -> usize,
    state: Mutex<State<J, R>>,
    changed: Condvar,
}

fn poisoned() -> ServingError {
    ServingError::Unavailable("the batcher failed earlier; reload the model".into())
}

impl<J, R> Coalescer<J, R> {
    /// A coalescer with `policy`.
    pub fn new(policy: BatchPolicy, compatible: fn(&J, &J) -> bool, rows: fn(&J) -> usize) -> Self {
        Coalescer {
            policy,
            compatible,
            rows,
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                leading: false,
                next_id: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Answers `payload` as part of a batch; `execute` answers a whole batch, one answer per
    /// request in order. Returns the answer and the request's time in the queue.
    pub fn submit(
        &self,
        payload: J,
        execute: &dyn Fn(Vec<J>) -> Result<Vec<R>, ServingError>,
    ) -> Reply<R> {
        let rows = (self.rows)(&payload);
        let (reply, answer): (Sender<Reply<R>>, Receiver<Reply<R>>) = channel();
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        if state.waiting.len() >= self.policy.max_queue {
            return Err(ServingError::Overloaded(format!(
                "the queue of this model is full ({} requests waiting); retry shortly",
                self.policy.max_queue
            )));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.waiting.push_back(Job {
            id,
            payload,
            rows,
            enqueued: Instant::now(),
            reply,
        });
        self.changed.notify_all();
        loop {
            // Checked under the lock: a leader sends, then takes the lock to notify.
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let mine_waiting = state.waiting.iter().any(|j| j.id == id);
            if !state.leading && mine_waiting {
                state.leading = true;
                drop(state);
                self.lead(execute);
                state = self.state.lock().map_err(|_| poisoned())?;
                continue;
            }
            state = self.changed.wait(state).map_err(|_| poisoned())?;
        }
    }

    /// Forms one batch from the oldest waiting request and runs it.
    fn lead(&self, execute: &dyn Fn(Vec<J>) -> Result<Vec<R>, ServingError>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let deadline = state
            .waiting
            .front()
            .map_or_else(Instant::now, |j| j.enqueued + self.policy.max_delay);
        loop {
            let ready_rows = match state.waiting.front() {
                Some(seed) => state
                    .waiting
                    .iter()
                    .filter(|j| (self.compatible)(&seed.payload, &j.payload))
                    .map(|j| j.rows)
                    .sum::<usize>(),
                None => 0,
            };
            let now = Instant::now();
            if ready_rows >= self.policy.max_batch
                || self.policy.preferred.contains(&ready_rows)
                || now >= deadline
            {
                break;
            }
            match self.changed.wait_timeout(state, deadline - now) {
                Ok((s, _)) => state = s,
                Err(_) => return,
            }
        }
        let mut batch: Vec<Job<J, R>> = Vec::new();
        let mut rows = 0;
        let mut kept = VecDeque::new();
        while let Some(job) = state.waiting.pop_front() {
            let fits = batch
                .first()
                .is_none_or(|seed| (self.compatible)(&seed.payload, &job.payload))
                && (batch.is_empty() || rows + job.rows <= self.policy.max_batch);
            if fits {
                rows += job.rows;
                batch.push(job);
            } else {
                kept.push_back(job);
            }
        }
        state.waiting = kept;
        state.leading = false;
        drop(state);
        // Others may lead the requests left behind while this batch runs.
        self.changed.notify_all();

        let started = Instant::now();
        let mut replies = Vec::with_capacity(batch.len());
        let mut payloads = Vec::with_capacity(batch.len());
        for job in batch {
            replies.push((job.reply, started.saturating_duration_since(job.enqueued)));
            payloads.push(job.payload);
        }
        let count = payloads.len();
        match execute(payloads) {
            Ok(answers) if answers.len() == count => {
                for ((reply, queued), answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok((answer, queued)));
                }
            }
            Ok(answers) => {
                let e = ServingError::Invalid(format!(
                    "a batch of {count} requests produced {} answers",
                    answers.len()
                ));
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        let _guard = self.state.lock();
        self.changed.notify_all();
    }
}

/// A tensor request: validated inputs (first dimension is the batch) and the outputs wanted.
pub struct TensorRequest {
    /// Inputs.
    pub inputs: Vec<NamedTensor>,
    /// Outputs to produce.
    pub outputs: Vec<String>,
}

/// Tensor requests may share a run when they agree on inputs, types, non-batch shapes and
/// outputs.
pub fn tensors_compatible(a: &TensorRequest, b: &TensorRequest) -> bool {
    a.outputs == b.outputs
        && a.inputs.len() == b.inputs.len()
        && a.inputs.iter().all(|x| {
            b.inputs.iter().any(|y| {
                y.name == x.name
                    && y.data.data_type() == x.data.data_type()
                    && y.shape.get(1..) == x.shape.get(1..)
            })
        })
}

/// Rows of a tensor request: its batch dimension.
pub fn tensor_rows(r: &TensorRequest) -> usize {
    r.inputs
        .first()
        .and_then(|t| t.shape.first())
        .map_or(1, |b| usize::try_from(*b).unwrap_or(0))
}

/// Runs tensor requests as one: concatenates their inputs, runs `run`, and cuts the outputs
/// back into each request's rows.
pub fn run_merged(
    requests: Vec<TensorRequest>,
    run: RunTensors<'_>,
) -> Result<Vec<Vec<NamedTensor>>, ServingError> {
    let rows: Vec<usize> = requests.iter().map(tensor_rows).collect();
    let merged = merge(&requests)?;
    let outputs = run(&merged, &requests[0].outputs)?;
    split(&outputs, &rows)
}

/// Concatenates the requests' inputs along the batch dimension.
fn merge(batch: &[TensorRequest]) -> Result<Vec<NamedTensor>, ServingError> {
    let seed = &batch[0];
    let rows: usize = batch.iter().map(tensor_rows).sum();
    seed.inputs
        .iter()
        .map(|first| {
            let mut data = first.data.clone();
            for job in &batch[1..] {
                let other = job
                    .inputs
                    .iter()
                    .find(|t| t.name == first.name)
                    .ok_or_else(|| {
                        ServingError::Invalid(format!(
                            "input {:?} missing from a batched request",
                            first.name
                        ))
                    })?;
                append(&mut data, &other.data)?;
            }
            let mut shape = first.shape.clone();
            if let Some(b) = shape.first_mut() {
                *b = rows as i64;
            }
            Ok(NamedTensor {
                name: first.name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

fn append(into: &mut TensorData, from: &TensorData) -> Result<(), ServingError> {
    match (into, from) {
        (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
        (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
        (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
        (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
        (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
        (TensorData::U32(a), TensorData::U32(b)) => a.extend_from_slice(b),
        (TensorData::U64(a), TensorData::U64(b)) => a.extend_from_slice(b),
        (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
        (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
        _ => {
            return Err(ServingError::Invalid(
                "batched requests differ in datatype".into(),
            ));
        }
    }
    Ok(())
}

/// Cuts each output back into the requests' rows.
fn split(outputs: &[NamedTensor], batch: &[usize]) -> Result<Vec<Vec<NamedTensor>>, ServingError> {
    let rows: usize = batch.iter().sum();
    let mut parts: Vec<Vec<NamedTensor>> = batch.iter().map(|_| Vec::new()).collect();
    for out in outputs {
        if out.shape.first().map(|b| *b as usize) != Some(rows) || rows == 0 {
            return Err(ServingError::Invalid(format!(
                "output {:?} has shape {:?}, which cannot be split into a batch of {rows}",
                out.name, out.shape
            )));
        }
        let per_row = out.data.len() / rows;
        let mut offset = 0;
        for (job_rows, part) in batch.iter().zip(parts.iter_mut()) {
            let range = offset * per_row..(offset + job_rows) * per_row;
            let data = slice(&out.data, range);
            let mut shape = out.shape.clone();
            shape[0] = *job_rows as i64;
            part.push(NamedTensor {
                name: out.name.clone(),
                shape,
                data,
            });
            offset += job_rows;
        }
    }
    Ok(parts)
}

fn slice(data: &TensorData, range: std::ops::Range<usize>) -> TensorData {
    match data {
        TensorData::Bool(v) => TensorData::Bool(v[range].to_vec()),
        TensorData::U8(v) => TensorData::U8(v[range].to_vec()),
        TensorData::I8(v) => TensorData::I8(v[range].to_vec()),
        TensorData::I32(v) => TensorData::I32(v[range].to_vec()),
        TensorData::I64(v) => TensorData::I64(v[range].to_vec()),
        TensorData::U32(v) => TensorData::U32(v[range].to_vec()),
        TensorData::U64(v) => TensorData::U64(v[range].to_vec()),
        TensorData::F32(v) => TensorData::F32(v[range].to_vec()),
        TensorData::F64(v) => TensorData::F64(v[range].to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn request(rows: usize, value: f32) -> TensorRequest {
        TensorRequest {
            inputs: vec![NamedTensor {
                name: "x".into(),
                shape: vec![rows as i64, 2],
                data: TensorData::F32(vec![value; rows * 2]),
            }],
            outputs: vec!["y".into()],
        }
    }

    fn policy(max_queue: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch: 8,
            preferred: vec![],
            max_delay: Duration::from_millis(300),
            max_queue,
        }
    }

    #[test]
    fn concurrent_requests_share_runs_and_get_their_own_rows() {
        let batcher = Arc::new(Coalescer::new(policy(100), tensors_compatible, tensor_rows));
        let runs = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let batcher = batcher.clone();
                    let runs = runs.clone();
                    scope.spawn(move || {
                        // Doubles every element: each request must get back its own values.
                        let double = |inputs: &[NamedTensor], _: &[String]| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            let TensorData::F32(v) = &inputs[0].data else {
                                unreachable!()
                            };
                            Ok(vec![NamedTensor {
                                name: "y".into(),
                                shape: inputs[0].shape.clone(),
                                data: TensorData::F32(v.iter().map(|x| x * 2.0).collect()),
                            }])
                        };
                        batcher.submit(request(2, i as f32), &|reqs| run_merged(reqs, &double))
                    })
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let (out, _) = h.join().unwrap().unwrap();
                assert_eq!(out[0].shape, vec![2, 2]);
                assert_eq!(out[0].data, TensorData::F32(vec![i as f32 * 2.0; 4]));
            }
        });
        // Four requests of two rows fill one batch of eight.
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn incompatible_requests_run_separately() {
        let batcher = Arc::new(Coalescer::new(policy(100), tensors_compatible, tensor_rows));
        let runs = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for width in [2, 3] {
                let batcher = batcher.clone();
                let runs = runs.clone();
                scope.spawn(move || {
                    let echo = |inputs: &[NamedTensor], _: &[String]| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(inputs.to_vec())
                    };
                    let mut r = request(1, 1.0);
                    r.inputs[0].shape = vec![1, width];
                    r.inputs[0].data = TensorData::F32(vec![1.0; width as usize]);
                    let (out, _) = batcher.submit(r, &|reqs| run_merged(reqs, &echo)).unwrap();
                    assert_eq!(out[0].shape, vec![1, width]);
                });
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let batcher: Coalescer<TensorRequest, Vec<NamedTensor>> =
            Coalescer::new(policy(0), tensors_compatible, tensor_rows);
        let err = batcher
            .submit(request(1, 0.0), &|_| Ok(Vec::new()))
            .unwrap_err();
        assert!(matches!(err, ServingError::Overloaded(_)), "{err:?}");
    }
}
