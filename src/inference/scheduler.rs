//! The scheduler of one model version: a bounded queue and one worker thread per instance, as
//! in Triton.
//!
//! A request waits in the queue until an instance is free. The free instance's worker takes the
//! oldest request and, when the model batches dynamically, the compatible requests behind it, up
//! to the batch size; it waits up to `max_queue_delay` for a batch to fill only while the oldest
//! request is younger than that. Batches are formed when an instance can run them, so requests
//! that arrive while every instance is busy join one batch instead of queueing as many small
//! ones. Each worker owns its instance; requests never contend for sessions.
//!
//! A request of [`Priority::High`] (a person waiting on a single query) goes ahead of every
//! normal request in the queue and is not held for the batching window: it runs as soon as an
//! instance is free, with whatever compatible requests are already queued.
//!
//! The queue policy is Triton's: `max_queue_size` refuses at once when the queue is full, and
//! `default_timeout_microseconds` bounds the wait, after which a request is either refused
//! (`REJECT`) or put behind every request still in time (`DELAY`).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::manager::ServingError;
use super::model_config::TimeoutAction;

/// How one model version queues and batches.
#[derive(Debug, Clone)]
pub struct SchedulePolicy {
    /// Dynamic batching, when the model has it; otherwise one request per run.
    pub batching: Option<Batching>,
    /// Most requests waiting.
    pub max_queue: usize,
    /// Longest wait in the queue, unless a request asks for its own.
    pub timeout: Option<Duration>,
    /// What happens to a request that waited past its timeout.
    pub timeout_action: TimeoutAction,
    /// Whether a request may set its own timeout.
    pub allow_timeout_override: bool,
}

/// Dynamic batching settings.
#[derive(Debug, Clone)]
pub struct Batching {
    /// Rows that make a batch worth running without waiting longer.
    pub max_batch: usize,
    /// Most rows a worker looks at to choose a batch ([`BatchRule::select`] picks among them).
    pub window: usize,
    /// Row counts worth running at once without waiting longer.
    pub preferred: Vec<usize>,
    /// Longest wait for a batch to fill.
    pub max_delay: Duration,
}

/// Which requests may run together.
pub trait BatchRule<J>: Send + Sync {
    /// Rows a request brings.
    fn rows(&self, job: &J) -> usize;
    /// Whether `other` may share a batch with `seed`.
    fn compatible(&self, seed: &J, other: &J) -> bool;
    /// Of `candidates` (the oldest request first, then compatible requests in arrival order,
    /// within the batching window), the ones to run now, by index; the oldest always runs.
    fn select(&self, candidates: &[&J]) -> Vec<usize> {
        (0..candidates.len()).collect()
    }
}

/// Where a request goes in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// In arrival order, batched within the window.
    Normal,
    /// Ahead of normal requests, and never held for the batching window.
    High,
}

/// A request's answer and its time in the queue.
pub type Reply<R> = Result<(R, Duration), ServingError>;

/// Runs one batch on an instance and answers each of its requests through [`Replies`].
pub type RunBatch<S, J, R> = dyn Fn(&mut S, Vec<J>, &mut Replies<R>) + Send + Sync;

struct Job<J, R> {
    id: u64,
    payload: J,
    rows: usize,
    priority: Priority,
    enqueued: Instant,
    /// When the request's wait runs out, if it has a timeout.
    expires: Option<Instant>,
    reply: oneshot::Sender<Reply<R>>,
}

struct Queue<J, R> {
    /// Requests in arrival order.
    waiting: VecDeque<Job<J, R>>,
    /// Requests past their timeout under the `DELAY` action: served when `waiting` is empty.
    delayed: VecDeque<Job<J, R>>,
    next_id: u64,
    /// The version is being unloaded: workers finish the queue and stop.
    closing: bool,
    /// Why the instances stopped, after a run failed beyond recovery.
    broken: Option<String>,
}

impl<J, R> Queue<J, R> {
    /// Where the next batch comes from: requests in time first, late ones when none is left.
    fn next_source(&mut self) -> &mut VecDeque<Job<J, R>> {
        if self.waiting.is_empty() {
            &mut self.delayed
        } else {
            &mut self.waiting
        }
    }
}

struct Shared<J, R> {
    model: String,
    policy: SchedulePolicy,
    rule: Arc<dyn BatchRule<J>>,
    queue: Mutex<Queue<J, R>>,
    arrived: Condvar,
}

/// The queue and workers of one model version. Dropping it lets the workers finish what is
/// queued and stop; their instances are released with them.
pub struct Scheduler<J, R> {
    shared: Arc<Shared<J, R>>,
}

/// The answers to one batch, one per request in batch order. A request the run does not answer
/// gets an error when the run ends.
pub struct Replies<R> {
    replies: Vec<Option<(oneshot::Sender<Reply<R>>, Duration)>>,
}

impl<R> Replies<R> {
    /// Answers request `index` of the batch (first answer wins).
    pub fn send(&mut self, index: usize, answer: Result<R, ServingError>) {
        if let Some((reply, queued)) = self.replies.get_mut(index).and_then(Option::take) {
            let _ = reply.send(answer.map(|a| (a, queued)));
        }
    }

    /// Answers every request not answered yet with `error`.
    pub fn fail_rest(&mut self, error: &ServingError) {
        for (reply, _) in self.replies.iter_mut().filter_map(Option::take) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

impl<R> Drop for Replies<R> {
    fn drop(&mut self) {
        self.fail_rest(&ServingError::Invalid(
            "the model run produced no answer for this request".into(),
        ));
    }
}

fn lock<'a, J, R>(shared: &'a Shared<J, R>) -> MutexGuard<'a, Queue<J, R>> {
    // Nothing panics while holding the lock; recover the guard rather than fail every request.
    shared
        .queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<J: Send + 'static, R: Send + 'static> Scheduler<J, R> {
    /// Starts one worker thread per instance. `rule` says which requests run together and
    /// `run` runs a batch on an instance.
    pub fn start<S: Send + 'static>(
        model: &str,
        policy: SchedulePolicy,
        rule: Arc<dyn BatchRule<J>>,
        instances: Vec<S>,
        run: Arc<RunBatch<S, J, R>>,
    ) -> Result<Scheduler<J, R>, ServingError> {
        let shared = Arc::new(Shared {
            model: model.to_string(),
            policy,
            rule,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                delayed: VecDeque::new(),
                next_id: 0,
                closing: false,
                broken: None,
            }),
            arrived: Condvar::new(),
        });
        // Built first, so that if a thread cannot start, dropping it stops those that did.
        let scheduler = Scheduler { shared };
        for (i, mut instance) in instances.into_iter().enumerate() {
            let worker = scheduler.shared.clone();
            let run = run.clone();
            std::thread::Builder::new()
                .name(format!("model-{i}"))
                .spawn(move || work(&worker, &mut instance, run.as_ref()))
                .map_err(|e| {
                    ServingError::Unavailable(format!("cannot start a model instance thread: {e}"))
                })?;
        }
        Ok(scheduler)
    }

    /// Queues `payload` and waits for its answer without holding a thread. `timeout` is the
    /// request's own limit on its wait in the queue, honoured when the policy allows overrides.
    /// A request whose caller gives up (the future is dropped) is not run if still queued.
    pub async fn submit(
        &self,
        payload: J,
        timeout: Option<Duration>,
        priority: Priority,
    ) -> Reply<R> {
        let shared = &self.shared;
        let policy = &shared.policy;
        let timeout = timeout
            .filter(|_| policy.allow_timeout_override)
            .or(policy.timeout);
        let rows = shared.rule.rows(&payload);
        let (reply, mut answer) = oneshot::channel();
        let id = {
            let mut queue = lock(shared);
            if let Some(reason) = &queue.broken {
                return Err(ServingError::Unavailable(reason.clone()));
            }
            if queue.waiting.len() + queue.delayed.len() >= policy.max_queue {
                return Err(ServingError::Overloaded(format!(
                    "the queue of model {:?} is full ({} requests waiting); retry shortly",
                    shared.model, policy.max_queue
                )));
            }
            queue.next_id += 1;
            let id = queue.next_id;
            let now = Instant::now();
            let job = Job {
                id,
                payload,
                rows,
                priority,
                enqueued: now,
                expires: timeout.map(|t| now + t),
                reply,
            };
            match priority {
                Priority::Normal => queue.waiting.push_back(job),
                Priority::High => {
                    // Behind earlier high-priority requests, ahead of every normal one.
                    let at = queue
                        .waiting
                        .iter()
                        .position(|j| j.priority == Priority::Normal)
                        .unwrap_or(queue.waiting.len());
                    queue.waiting.insert(at, job);
                }
            }
            id
        };
        shared.arrived.notify_one();
        let lost = || ServingError::Unavailable(format!("model {:?} stopped", shared.model));
        let Some(limit) = timeout.filter(|_| policy.timeout_action == TimeoutAction::Reject) else {
            return answer.await.unwrap_or_else(|_| Err(lost()));
        };
        match tokio::time::timeout(limit, &mut answer).await {
            Ok(result) => result.unwrap_or_else(|_| Err(lost())),
            Err(_) => {
                {
                    let mut queue = lock(shared);
                    let before = queue.waiting.len();
                    queue.waiting.retain(|j| j.id != id);
                    if queue.waiting.len() < before {
                        return Err(ServingError::Unavailable(format!(
                            "the request waited longer than its timeout of {} µs in the queue of model {:?}",
                            limit.as_micros(),
                            shared.model
                        )));
                    }
                }
                // Already running: its answer is on the way.
                answer.await.unwrap_or_else(|_| Err(lost()))
            }
        }
    }

    /// Requests waiting in the queue.
    #[cfg(test)]
    fn queued(&self) -> usize {
        let queue = lock(&self.shared);
        queue.waiting.len() + queue.delayed.len()
    }
}

impl<J, R> Drop for Scheduler<J, R> {
    fn drop(&mut self) {
        lock(&self.shared).closing = true;
        self.shared.arrived.notify_all();
    }
}

/// A worker: takes batches and runs them on its instance until the scheduler closes.
fn work<S, J, R>(shared: &Shared<J, R>, instance: &mut S, run: &RunBatch<S, J, R>) {
    while let Some(batch) = next_batch(shared) {
        let started = Instant::now();
        let mut payloads = Vec::with_capacity(batch.len());
        let mut replies = Replies {
            replies: Vec::with_capacity(batch.len()),
        };
        for job in batch {
            replies.replies.push(Some((
                job.reply,
                started.saturating_duration_since(job.enqueued),
            )));
            payloads.push(job.payload);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| run(instance, payloads, &mut replies)));
        if outcome.is_err() {
            // The instance may be in any state: stop serving from this version.
            let reason = format!(
                "model {:?} failed during a run; reload it to serve it again",
                shared.model
            );
            tracing::error!(model = %shared.model, "a model run panicked; the version stops serving");
            let error = ServingError::Unavailable(reason.clone());
            replies.fail_rest(&error);
            let mut guard = lock(shared);
            let queue = &mut *guard;
            queue.broken = Some(reason);
            for job in queue.waiting.drain(..).chain(queue.delayed.drain(..)) {
                let _ = job.reply.send(Err(error.clone()));
            }
            drop(guard);
            shared.arrived.notify_all();
            return;
        }
    }
}

/// Waits for the next batch this worker should run; `None` when it should stop.
fn next_batch<J, R>(shared: &Shared<J, R>) -> Option<Vec<Job<J, R>>> {
    let policy = &shared.policy;
    let mut queue = lock(shared);
    loop {
        if queue.broken.is_some() {
            return None;
        }
        let now = Instant::now();
        if policy.timeout_action == TimeoutAction::Delay {
            // Requests past their time go behind every request still in time.
            let (late, in_time): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut queue.waiting)
                .into_iter()
                .partition(|j| j.expires.is_some_and(|e| e <= now));
            queue.waiting = in_time;
            queue.delayed.extend(late);
        }
        // Requests whose callers gave up are not worth a run.
        queue.waiting.retain(|j| !j.reply.is_closed());
        queue.delayed.retain(|j| !j.reply.is_closed());
        let closing = queue.closing;
        let source: &VecDeque<_> = queue.next_source();
        let Some(seed) = source.front() else {
            if closing {
                return None;
            }
            queue = shared
                .arrived
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        };
        let Some(batching) = &policy.batching else {
            return queue.next_source().pop_front().map(|j| vec![j]);
        };
        let rule = shared.rule.as_ref();
        let ready: usize = source
            .iter()
            .filter(|j| rule.compatible(&seed.payload, &j.payload))
            .map(|j| j.rows)
            .sum();
        let deadline = seed.enqueued + batching.max_delay;
        let full = ready >= batching.max_batch || batching.preferred.contains(&ready);
        let waits = seed.priority == Priority::Normal;
        if waits && !full && now < deadline && !closing {
            queue = shared
                .arrived
                .wait_timeout(queue, deadline - now)
                .map(|(q, _)| q)
                .unwrap_or_else(|e| e.into_inner().0);
            continue;
        }
        // The candidates: the oldest request and the compatible ones behind it in the window.
        let mut candidates = vec![0];
        let mut rows = seed.rows;
        for (i, job) in source.iter().enumerate().skip(1) {
            if rule.compatible(&seed.payload, &job.payload) && rows + job.rows <= batching.window {
                rows += job.rows;
                candidates.push(i);
            }
        }
        let payloads: Vec<&J> = candidates.iter().map(|i| &source[*i].payload).collect();
        let mut chosen: Vec<usize> = rule
            .select(&payloads)
            .into_iter()
            .filter_map(|c| candidates.get(c).copied())
            .collect();
        chosen.push(0);
        chosen.sort_unstable();
        chosen.dedup();
        let source = queue.next_source();
        let mut batch = Vec::with_capacity(chosen.len());
        let mut kept = VecDeque::with_capacity(source.len());
        for (i, job) in source.drain(..).enumerate() {
            if chosen.binary_search(&i).is_ok() {
                batch.push(job);
            } else {
                kept.push_back(job);
            }
        }
        *source = kept;
        return Some(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A job: its value and its rows. The instance records the batch sizes it ran.
    type Sizes = Arc<Mutex<Vec<usize>>>;
    type TestScheduler = Scheduler<(u32, usize), u32>;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    impl TestScheduler {
        /// Submits from a plain thread, as the tests' clients are.
        fn submit_now(&self, job: (u32, usize), timeout: Option<Duration>) -> Reply<u32> {
            block_on(self.submit(job, timeout, Priority::Normal))
        }
    }

    /// Jobs are (value, rows); all may share a batch.
    struct Rows;

    impl BatchRule<(u32, usize)> for Rows {
        fn rows(&self, job: &(u32, usize)) -> usize {
            job.1
        }
        fn compatible(&self, _: &(u32, usize), _: &(u32, usize)) -> bool {
            true
        }
    }

    /// As [`Rows`], but only even values join the oldest request.
    struct EvenOnly;

    impl BatchRule<(u32, usize)> for EvenOnly {
        fn rows(&self, job: &(u32, usize)) -> usize {
            job.1
        }
        fn compatible(&self, _: &(u32, usize), _: &(u32, usize)) -> bool {
            true
        }
        fn select(&self, candidates: &[&(u32, usize)]) -> Vec<usize> {
            (1..candidates.len())
                .filter(|i| candidates[*i].0.is_multiple_of(2))
                .collect()
        }
    }

    fn policy(batching: bool, max_queue: usize) -> SchedulePolicy {
        SchedulePolicy {
            batching: batching.then(|| Batching {
                max_batch: 8,
                window: 8,
                preferred: vec![],
                max_delay: Duration::from_millis(200),
            }),
            max_queue,
            timeout: None,
            timeout_action: TimeoutAction::Reject,
            allow_timeout_override: true,
        }
    }

    /// Doubles each value after sleeping `pause`; records each batch's size.
    fn doubler(pause: Duration) -> Arc<RunBatch<Sizes, (u32, usize), u32>> {
        Arc::new(move |sizes: &mut Sizes, jobs: Vec<(u32, usize)>, replies| {
            std::thread::sleep(pause);
            sizes.lock().unwrap().push(jobs.iter().map(|j| j.1).sum());
            for (i, (v, _)) in jobs.into_iter().enumerate() {
                replies.send(i, Ok(v * 2));
            }
        })
    }

    fn start(policy: SchedulePolicy, pause: Duration) -> (Arc<TestScheduler>, Sizes) {
        start_with(policy, pause, Arc::new(Rows))
    }

    fn start_with(
        policy: SchedulePolicy,
        pause: Duration,
        rule: Arc<dyn BatchRule<(u32, usize)>>,
    ) -> (Arc<TestScheduler>, Sizes) {
        let sizes: Sizes = Arc::default();
        let scheduler =
            Scheduler::start("test", policy, rule, vec![sizes.clone()], doubler(pause)).unwrap();
        (Arc::new(scheduler), sizes)
    }

    #[test]
    fn requests_that_arrive_while_the_instance_is_busy_share_one_batch() {
        let (scheduler, sizes) = start(policy(true, 100), Duration::from_millis(100));
        std::thread::scope(|scope| {
            // The first request starts a run at once (a batch of 8 rows fills it)…
            let first = scheduler.clone();
            let lead = scope.spawn(move || first.submit_now((1, 8), None));
            std::thread::sleep(Duration::from_millis(20));
            // …and six single-row requests arrive during it: they must run as one batch.
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let s = scheduler.clone();
                    scope.spawn(move || s.submit_now((i, 1), None))
                })
                .collect();
            assert_eq!(lead.join().unwrap().unwrap().0, 2);
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.join().unwrap().unwrap().0, i as u32 * 2);
            }
        });
        assert_eq!(*sizes.lock().unwrap(), vec![8, 6]);
    }

    /// Occupies the instance with an 8-row request, queues `jobs` (value, priority) behind it
    /// one after the other, and returns the values in the order their answers came back. The
    /// instance must take longer per run than queueing takes on a busy machine.
    fn queue_behind_a_busy_instance(
        scheduler: &Arc<TestScheduler>,
        jobs: &[(u32, Priority)],
    ) -> Vec<u32> {
        let done = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|scope| {
            let s = scheduler.clone();
            scope.spawn(move || s.submit_now((0, 8), None).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            for (queued, &(v, priority)) in jobs.iter().enumerate() {
                let (s, done) = (scheduler.clone(), done.clone());
                scope.spawn(move || {
                    block_on(s.submit((v, 1), None, priority)).unwrap();
                    done.lock().unwrap().push(v);
                });
                // In the queue before the next arrives: their order is the arrival order.
                while scheduler.queued() <= queued {
                    std::thread::yield_now();
                }
            }
        });
        done.lock().unwrap().clone()
    }

    #[test]
    fn the_rule_chooses_among_the_window_and_the_rest_keep_their_place() {
        let (scheduler, sizes) = start_with(
            policy(true, 100),
            Duration::from_millis(150),
            Arc::new(EvenOnly),
        );
        let jobs: Vec<_> = (1..=4).map(|v| (v, Priority::Normal)).collect();
        let done = queue_behind_a_busy_instance(&scheduler, &jobs);
        // 1 (oldest) runs with the even 2 and 4; 3 keeps its place and runs next.
        assert_eq!(*sizes.lock().unwrap(), vec![8, 3, 1]);
        assert_eq!(done.last(), Some(&3));
    }

    #[test]
    fn a_high_priority_request_goes_first_and_does_not_wait_for_the_window() {
        let (scheduler, sizes) = start_with(
            policy(true, 100),
            Duration::from_millis(150),
            Arc::new(EvenOnly),
        );
        // Alone, a high-priority request is not held for the 200 ms window: its answer comes
        // after the 150 ms run, well before window and run would take.
        let started = Instant::now();
        let answer = block_on(scheduler.submit((7, 1), None, Priority::High));
        assert_eq!(answer.unwrap().0, 14);
        assert!(started.elapsed() < Duration::from_millis(300));
        // Behind a busy instance, 3 seeds the next batch and takes the even 2 along; 1,
        // queued first, runs last.
        let jobs = [
            (1, Priority::Normal),
            (2, Priority::Normal),
            (3, Priority::High),
        ];
        let done = queue_behind_a_busy_instance(&scheduler, &jobs);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 8, 2, 1]);
        assert_eq!(done.last(), Some(&1));
    }

    #[test]
    fn without_batching_each_request_runs_alone() {
        let (scheduler, sizes) = start(policy(false, 100), Duration::from_millis(5));
        std::thread::scope(|scope| {
            for i in 0..4 {
                let s = scheduler.clone();
                scope.spawn(move || assert_eq!(s.submit_now((i, 1), None).unwrap().0, i * 2));
            }
        });
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1, 1, 1]);
    }

    #[test]
    fn a_request_whose_caller_gave_up_is_not_run() {
        let (scheduler, sizes) = start(policy(false, 100), Duration::from_millis(80));
        std::thread::scope(|scope| {
            let s = scheduler.clone();
            scope.spawn(move || s.submit_now((0, 1), None).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            // Queued behind the busy instance, then abandoned (a client that disconnected).
            let abandoned = block_on(async {
                tokio::time::timeout(
                    Duration::from_millis(10),
                    scheduler.submit((1, 2), None, Priority::Normal),
                )
                .await
            });
            assert!(
                abandoned.is_err(),
                "the instance was busy: it cannot have answered"
            );
            assert_eq!(scheduler.submit_now((2, 3), None).unwrap().0, 4);
        });
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3]);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let (scheduler, _) = start(policy(false, 0), Duration::ZERO);
        let err = scheduler.submit_now((1, 1), None).unwrap_err();
        assert!(matches!(err, ServingError::Overloaded(_)), "{err:?}");
    }

    #[test]
    fn reject_refuses_a_request_that_waited_too_long_and_keeps_serving() {
        let (scheduler, _) = start(policy(false, 100), Duration::from_millis(150));
        std::thread::scope(|scope| {
            let s = scheduler.clone();
            let busy = scope.spawn(move || s.submit_now((1, 1), None));
            std::thread::sleep(Duration::from_millis(20));
            let err = scheduler
                .submit_now((2, 1), Some(Duration::from_millis(30)))
                .unwrap_err();
            assert!(err.to_string().contains("timeout of 30000 µs"), "{err}");
            assert_eq!(busy.join().unwrap().unwrap().0, 2);
        });
        assert_eq!(scheduler.submit_now((3, 1), None).unwrap().0, 6);
        assert_eq!(scheduler.queued(), 0);
    }

    #[test]
    fn delay_puts_late_requests_behind_those_in_time() {
        let mut p = policy(false, 100);
        p.timeout_action = TimeoutAction::Delay;
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        let run: Arc<RunBatch<(), (u32, usize), u32>> =
            Arc::new(move |_, jobs: Vec<(u32, usize)>, replies| {
                std::thread::sleep(Duration::from_millis(60));
                seen.lock().unwrap().push(jobs[0].0);
                replies.send(0, Ok(jobs[0].0));
            });
        let scheduler =
            Arc::new(Scheduler::start("test", p, Arc::new(Rows), vec![()], run).unwrap());
        std::thread::scope(|scope| {
            let s = scheduler.clone();
            scope.spawn(move || s.submit_now((0, 1), None).unwrap());
            std::thread::sleep(Duration::from_millis(10));
            // Job 1 times out while job 0 runs; job 2 has no timeout and overtakes it.
            let s = scheduler.clone();
            scope.spawn(move || {
                s.submit_now((1, 1), Some(Duration::from_millis(5)))
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(10));
            let s = scheduler.clone();
            scope.spawn(move || s.submit_now((2, 1), None).unwrap());
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 2, 1]);
    }

    #[test]
    fn a_run_that_panics_fails_its_requests_and_stops_the_version_cleanly() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let run: Arc<RunBatch<(), (u32, usize), u32>> = Arc::new(move |_, _, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            panic!("instance fault");
        });
        let scheduler =
            Scheduler::start("test", policy(false, 100), Arc::new(Rows), vec![()], run).unwrap();
        let err = scheduler.submit_now((1, 1), None).unwrap_err();
        assert!(err.to_string().contains("reload it"), "{err}");
        let again = scheduler.submit_now((2, 1), None).unwrap_err();
        assert!(matches!(again, ServingError::Unavailable(_)), "{again:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
