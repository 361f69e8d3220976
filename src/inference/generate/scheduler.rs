//! A generator session's thread: continuous batching over one session. A generator runs one
//! such thread per session, all taking requests from the same queue.
//!
//! Each loop admits waiting requests while the batch has room (prefilling each prompt in one
//! run and sampling its first token), merges them into the batch, then runs one step for every
//! active sequence at once. The batch's caches are one tensor per layer and part,
//! `[rows, kv_heads, width, head_dim]`, each row padded on the left to the longest with
//! `attention_mask` 0 there and its own `position_ids`; a step's `present` outputs are the next
//! step's `past` inputs as they are, and the tensors are rebuilt only when rows join or leave.
//! Padded positions get a -1e9 bias before the softmax, which makes their weight exactly 0, so
//! a row computes what it would compute alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ort::value::DynValue;
use tokio::sync::mpsc::Sender;

use super::model::{CacheRow, Model};
use super::sampling::Sampler;
use super::text::{Pushed, TextStream};
use super::{Event, FinishReason, Finished, GenerateError, Shared};

/// One request, from the queue until it ends.
pub(super) struct Sequence {
    prompt: Vec<u32>,
    max_new: usize,
    sampler: Sampler,
    text: TextStream,
    events: Sender<Event>,
    generated: usize,
    /// Sent its final event (or was refused before queueing): nothing more to say on drop.
    ended: bool,
}

/// What a sequence does after a token.
enum Next {
    /// Feed this token next.
    Feed(u32),
    /// It has ended (or its client left).
    End,
}

impl Sequence {
    /// A request to queue: its prompt tokens, at most `max_new` tokens to generate, and where
    /// its events go.
    pub fn new(
        prompt: Vec<u32>,
        max_new: usize,
        sampler: Sampler,
        stop: Vec<String>,
        events: Sender<Event>,
    ) -> Sequence {
        Sequence {
            prompt,
            max_new,
            sampler,
            text: TextStream::new(stop),
            events,
            generated: 0,
            ended: false,
        }
    }

    /// Marks a sequence the caller already answered with an error.
    pub fn disarm(&mut self) {
        self.ended = true;
    }

    /// The client dropped its receiver.
    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Sends an event; false when the client has gone.
    fn send(&self, event: Event) -> bool {
        // The channel holds every event a sequence can send, so it is never full.
        self.events.try_send(event).is_ok()
    }

    fn fail(&mut self, error: GenerateError) {
        self.ended = true;
        self.send(Event::Failed(error));
    }

    fn done(&mut self, finish_reason: FinishReason, last: String) {
        self.ended = true;
        if !last.is_empty() {
            self.send(Event::Delta(last));
        }
        self.send(Event::Done(Finished {
            finish_reason,
            completion_tokens: self.generated,
        }));
    }

    /// Chooses the next token from its logits, streams its text, and says whether to go on.
    fn advance(&mut self, shared: &Shared, logits: &[f32]) -> Next {
        let Some(token) = self.sampler.sample(logits) else {
            self.fail(GenerateError::Internal(
                "the model produced no usable logits (all NaN)".into(),
            ));
            return Next::End;
        };
        let settings = &shared.settings;
        // Like the reference decoder: BOS also ends a completion (a model that starts a new
        // text is done with this one).
        if settings.eos.contains(&token) || settings.bos == Some(token) {
            match self.text.finish(&shared.tokenizer) {
                Ok(last) => self.done(FinishReason::Stop, last),
                Err(e) => self.fail(GenerateError::Internal(e)),
            }
            return Next::End;
        }
        self.generated += 1;
        match self.text.push(&shared.tokenizer, token) {
            Err(e) => {
                self.fail(GenerateError::Internal(e));
                Next::End
            }
            Ok(Pushed::Stopped(last)) => {
                self.done(FinishReason::Stop, last);
                Next::End
            }
            Ok(Pushed::Text(delta)) => {
                if !delta.is_empty() && !self.send(Event::Delta(delta)) {
                    return Next::End;
                }
                if self.generated >= self.max_new {
                    match self.text.finish(&shared.tokenizer) {
                        Ok(last) => self.done(FinishReason::Length, last),
                        Err(e) => self.fail(GenerateError::Internal(e)),
                    }
                    Next::End
                } else {
                    Next::Feed(token)
                }
            }
        }
    }
}

impl Drop for Sequence {
    /// A sequence dropped before its end (the thread stopped or panicked) still tells its
    /// client, which would otherwise wait for a final event that never comes.
    fn drop(&mut self) {
        if !self.ended {
            self.send(Event::Failed(GenerateError::Unavailable(
                "the generator stopped before the completion ended".into(),
            )));
        }
    }
}

/// One row of the batch.
struct Row {
    seq: Sequence,
    /// Real positions in the cache: the next token's position.
    len: usize,
    /// The token to feed next.
    next: u32,
}

/// The active sequences and their padded caches.
struct Batch {
    rows: Vec<Row>,
    /// Cache length, padding included.
    width: usize,
    cache: Vec<DynValue>,
}

/// A prefilled sequence waiting to join.
struct Joining {
    row: Row,
    cache: Vec<DynValue>,
}

/// Starts the thread.
pub(super) fn start(
    name: &str,
    model: Model,
    shared: Arc<Shared>,
    queue: crossbeam_channel::Receiver<Sequence>,
    max_batch: usize,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("generate-{name}"))
        .spawn(move || run(model, &shared, &queue, max_batch))
        .map(|_| ())
}

/// The loop; returns when the generator is dropped and its last sequence has ended.
fn run(
    mut model: Model,
    shared: &Shared,
    queue: &crossbeam_channel::Receiver<Sequence>,
    max_batch: usize,
) {
    let mut batch = Batch {
        rows: Vec::new(),
        width: 0,
        cache: Vec::new(),
    };
    let mut open = true;
    // This session's part of the generator's active count (sessions add theirs).
    let mut published = 0;
    loop {
        // Published before the wait for work, so that an idle generator reads 0.
        publish(shared, &mut published, batch.rows.len());
        let mut joining = Vec::new();
        while open && batch.rows.len() + joining.len() < max_batch {
            let next = if batch.rows.is_empty() && joining.is_empty() {
                // Nothing to decode: sleep until a request comes.
                queue
                    .recv()
                    .map_err(|_| crossbeam_channel::TryRecvError::Disconnected)
            } else {
                queue.try_recv()
            };
            let seq = match next {
                Ok(seq) => seq,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            };
            if let Some(j) = prefill(&mut model, shared, seq) {
                joining.push(j);
            }
        }
        if !joining.is_empty()
            && let Err(e) = join(&model, &mut batch, joining)
        {
            fail_all(&mut batch, &e);
        }
        publish(shared, &mut published, batch.rows.len());
        if batch.rows.is_empty() {
            if open {
                continue;
            }
            return;
        }
        // Clients that left are dropped before spending a step on them.
        if batch.rows.iter().any(|r| r.seq.cancelled()) {
            let keep: Vec<bool> = batch.rows.iter().map(|r| !r.seq.cancelled()).collect();
            if let Err(e) = retain(&model, &mut batch, &keep) {
                fail_all(&mut batch, &e);
                continue;
            }
            if batch.rows.is_empty() {
                continue;
            }
        }
        if let Err(e) = step(&mut model, shared, &mut batch) {
            fail_all(&mut batch, &e);
        }
    }
}

/// Moves this session's part of the active count from `published` to `now`.
fn publish(shared: &Shared, published: &mut usize, now: usize) {
    let active = &shared.stats.active;
    if now > *published {
        active.fetch_add(now - *published, Ordering::Relaxed);
    } else {
        active.fetch_sub(*published - now, Ordering::Relaxed);
    }
    *published = now;
}

/// Runs a new sequence's prompt and its first token; `None` when it has already ended.
fn prefill(model: &mut Model, shared: &Shared, mut seq: Sequence) -> Option<Joining> {
    if seq.cancelled() {
        seq.disarm();
        return None;
    }
    shared.stats.prefills.fetch_add(1, Ordering::Relaxed);
    let (logits, cache) = match model.prefill(&seq.prompt) {
        Ok(out) => out,
        Err(e) => {
            seq.fail(GenerateError::Internal(e));
            return None;
        }
    };
    match seq.advance(shared, &logits) {
        Next::End => None,
        Next::Feed(next) => {
            let len = std::mem::take(&mut seq.prompt).len();
            Some(Joining {
                row: Row { seq, len, next },
                cache,
            })
        }
    }
}

/// Adds prefilled sequences to the batch.
fn join(model: &Model, batch: &mut Batch, joining: Vec<Joining>) -> Result<(), String> {
    let mut sources: Vec<CacheRow<'_>> = batch
        .rows
        .iter()
        .enumerate()
        .map(|(row, r)| CacheRow {
            cache: &batch.cache,
            row,
            len: r.len,
        })
        .collect();
    sources.extend(joining.iter().map(|j| CacheRow {
        cache: &j.cache,
        row: 0,
        len: j.row.len,
    }));
    let (cache, width) = match model.assemble(&sources) {
        Ok(out) => out,
        Err(e) => {
            drop(sources);
            for mut j in joining {
                j.row.seq.fail(GenerateError::Internal(e.clone()));
            }
            return Err(e);
        }
    };
    batch.cache = cache;
    batch.width = width;
    batch.rows.extend(joining.into_iter().map(|j| j.row));
    Ok(())
}

/// Keeps the rows marked true; the cache narrows to the longest row left.
fn retain(model: &Model, batch: &mut Batch, keep: &[bool]) -> Result<(), String> {
    let sources: Vec<CacheRow<'_>> = batch
        .rows
        .iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(row, r)| CacheRow {
            cache: &batch.cache,
            row,
            len: r.len,
        })
        .collect();
    let (cache, width) = if sources.is_empty() {
        (Vec::new(), 0)
    } else {
        model.assemble(&sources)?
    };
    batch.cache = cache;
    batch.width = width;
    let mut i = 0;
    batch.rows.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(())
}

/// One token for every row; rows that end leave the batch.
fn step(model: &mut Model, shared: &Shared, batch: &mut Batch) -> Result<(), String> {
    let tokens: Vec<u32> = batch.rows.iter().map(|r| r.next).collect();
    let positions: Vec<usize> = batch.rows.iter().map(|r| r.len).collect();
    let pads: Vec<usize> = batch.rows.iter().map(|r| batch.width - r.len).collect();
    shared.stats.steps.fetch_add(1, Ordering::Relaxed);
    let (logits, cache) = model.step(&batch.cache, batch.width, &tokens, &positions, &pads)?;
    batch.cache = cache;
    batch.width += 1;
    let vocab = logits.len() / batch.rows.len();
    let mut keep = Vec::with_capacity(batch.rows.len());
    for (row, logits) in batch.rows.iter_mut().zip(logits.chunks_exact(vocab)) {
        row.len += 1;
        match row.seq.advance(shared, logits) {
            Next::Feed(next) => {
                row.next = next;
                keep.push(true);
            }
            Next::End => keep.push(false),
        }
    }
    if keep.iter().all(|k| *k) {
        Ok(())
    } else {
        retain(model, batch, &keep)
    }
}

/// A run failed: every active sequence ends with the error.
fn fail_all(batch: &mut Batch, error: &str) {
    tracing::error!(error, "generation step failed");
    for mut row in batch.rows.drain(..) {
        row.seq.fail(GenerateError::Internal(error.to_string()));
    }
    batch.cache.clear();
    batch.width = 0;
}
