//! The model is owned by one OS thread fed by a channel; texts are tokenized before they get
//! there (off the model thread). Like text-embeddings-inference, the thread forms batches
//! across requests (chunks from different messages and tenants): it takes whatever is
//! queued, waits at most `max_wait` for more, sorts the windows by length and cuts batches
//! that stay within `max_tokens` (rows × padded length) and `max_items` rows, each padded only
//! to its own longest row. A text longer than the model's window is several windows; its
//! scores are the worst (highest) per label over its windows.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use gatehouse_common::job::Lane;
use tokio::sync::oneshot;

use crate::model::{Classifier, ModelError, ModelInfo, TextEncoder, worst};

/// Per label, one probability.
pub type Scores = Vec<f32>;

/// How big a model batch may get, and how long the thread waits to fill one.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_tokens: usize,
    pub max_wait: Duration,
}

/// Something that turns a text into model windows (the model's [`TextEncoder`] in service).
pub trait Encode: Send + Sync + 'static {
    fn windows(&self, text: &str) -> Result<Vec<Vec<i64>>, ModelError>;
}

impl Encode for TextEncoder {
    fn windows(&self, text: &str) -> Result<Vec<Vec<i64>>, ModelError> {
        TextEncoder::windows(self, text)
    }
}

struct Request {
    windows: Vec<Vec<i64>>,
    reply: oneshot::Sender<Result<Vec<Scores>, ModelError>>,
    /// The caller's span (its chunk's `inference`): the parent, or a link, of its batches.
    span: tracing::Span,
}

/// Cheap to clone; dropping every handle stops the model thread(s).
#[derive(Clone)]
pub struct ModelHandle {
    tx: mpsc::Sender<Request>,
    /// The sync lane's own thread and session, when the worker has one.
    sync_tx: Option<mpsc::Sender<Request>>,
    /// Sync requests being scored: the bulk thread holds back its next batch while any are.
    sync_busy: Arc<AtomicUsize>,
    info: Arc<ModelInfo>,
    encoder: Arc<dyn Encode>,
}

/// How long the bulk thread holds back one batch for sync requests at most (so a stream of
/// sync requests slows bulk work but never stops it).
const MAX_YIELD: Duration = Duration::from_millis(500);

/// One text's scores (the worst window's, per label), how many windows it took, and each
/// window's own scores (what results store and explanations show).
#[derive(Debug, Clone, PartialEq)]
pub struct TextScores {
    pub scores: Scores,
    pub windows: usize,
    pub per_window: Vec<Scores>,
}

impl ModelHandle {
    /// Moves `model` onto its own thread; `encoder` tokenizes on the callers' side. With
    /// `sync_model` (a second session of the same model), sync-lane requests get a thread of
    /// their own, and the bulk thread yields to them between batches: a sync request waits
    /// behind no queued bulk batch.
    pub fn spawn(
        mut model: Box<dyn Classifier>,
        sync_model: Option<Box<dyn Classifier>>,
        encoder: Arc<dyn Encode>,
        limits: BatchLimits,
    ) -> std::io::Result<Self> {
        let info = Arc::new(model.info().clone());
        let (tx, rx) = mpsc::channel::<Request>();
        let limits = BatchLimits {
            max_items: limits.max_items.max(1),
            max_tokens: limits.max_tokens.max(1),
            max_wait: limits.max_wait,
        };
        let sync_busy = Arc::new(AtomicUsize::new(0));
        let gate = sync_model.is_some().then(|| sync_busy.clone());
        thread::Builder::new()
            .name(format!("model-{}", info.name))
            .spawn(move || run(model.as_mut(), &rx, limits, gate.as_deref()))?;
        let sync_tx = match sync_model {
            Some(mut sync_model) => {
                let (stx, srx) = mpsc::channel::<Request>();
                let sync_limits = BatchLimits {
                    max_wait: Duration::ZERO,
                    ..limits
                };
                thread::Builder::new()
                    .name(format!("model-{}-sync", info.name))
                    .spawn(move || run(sync_model.as_mut(), &srx, sync_limits, None))?;
                Some(stx)
            }
            None => None,
        };
        Ok(Self {
            tx,
            sync_tx,
            sync_busy,
            info,
            encoder,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Scores for `texts`, in order. Tokenizes on a blocking thread, then waits for the
    /// model thread.
    pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<TextScores>, ModelError> {
        self.classify_in(texts, Lane::Bulk).await
    }

    /// [`classify`](Self::classify) in a lane: sync-lane texts go to the sync thread when there
    /// is one.
    pub async fn classify_in(
        &self,
        texts: Vec<String>,
        lane: Lane,
    ) -> Result<Vec<TextScores>, ModelError> {
        let encoder = self.encoder.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|t| encoder.windows(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ModelError::Tokenize(e.to_string()))??;
        let counts: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let windows: Vec<Vec<i64>> = encoded.into_iter().flatten().collect();
        let (reply, rx) = oneshot::channel();
        let scores = match (&self.sync_tx, lane) {
            (Some(sync_tx), Lane::Sync) => {
                let busy = BusyGuard::new(&self.sync_busy);
                sync_tx
                    .send(Request {
                        windows,
                        reply,
                        span: tracing::Span::current(),
                    })
                    .map_err(|_| ModelError::Stopped)?;
                let scores = rx.await.map_err(|_| ModelError::Stopped)??;
                drop(busy);
                scores
            }
            _ => {
                self.tx
                    .send(Request {
                        windows,
                        reply,
                        span: tracing::Span::current(),
                    })
                    .map_err(|_| ModelError::Stopped)?;
                rx.await.map_err(|_| ModelError::Stopped)??
            }
        };
        let mut rest = scores.into_iter();
        Ok(counts
            .into_iter()
            .map(|n| {
                let mine: Vec<Scores> = rest.by_ref().take(n).collect();
                TextScores {
                    scores: worst(&mine),
                    windows: n,
                    per_window: mine,
                }
            })
            .collect())
    }
}

/// How many batches' worth of already-queued windows one round sorts together.
const DRAIN_FACTOR: usize = 8;

/// Counts a sync request as busy until dropped (also when its future is cancelled).
struct BusyGuard<'a>(&'a AtomicUsize);

impl<'a> BusyGuard<'a> {
    fn new(busy: &'a AtomicUsize) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Self(busy)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bulk thread, before each batch: hold back while sync requests are being scored (at
/// most [`MAX_YIELD`]).
fn yield_to_sync(gate: Option<&AtomicUsize>) {
    let Some(busy) = gate else { return };
    let started = Instant::now();
    while busy.load(Ordering::SeqCst) > 0 && started.elapsed() < MAX_YIELD {
        thread::sleep(Duration::from_millis(1));
    }
}

fn run(
    model: &mut dyn Classifier,
    rx: &mpsc::Receiver<Request>,
    limits: BatchLimits,
    gate: Option<&AtomicUsize>,
) {
    while let Ok(first) = rx.recv() {
        let mut queued = first.windows.len();
        let mut requests = vec![first];
        let deadline = Instant::now() + limits.max_wait;
        while queued < limits.max_items {
            let next = match rx.try_recv() {
                Ok(req) => Some(req),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    rx.recv_timeout(deadline - now).ok()
                }
            };
            let Some(req) = next else { break };
            queued += req.windows.len();
            requests.push(req);
        }
        // Whatever else is already queued joins too (no waiting), up to a bound: sorting the
        // windows of several chunks together pads far less than sorting each chunk alone.
        while queued < limits.max_items * DRAIN_FACTOR {
            let Ok(req) = rx.try_recv() else { break };
            queued += req.windows.len();
            requests.push(req);
        }
        process(model, requests, limits, gate);
    }
}

/// Cuts `lengths` (in the order given, i.e. sorted) into consecutive batches: a batch grows
/// while `rows × longest ≤ max_tokens` and `rows ≤ max_items`; a single row always fits.
pub fn plan_batches(lengths: &[usize], limits: BatchLimits) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (i, len) in lengths.iter().enumerate() {
        let rows = i - start + 1;
        let wider = longest.max(*len).max(1);
        if rows > 1 && (rows > limits.max_items || rows * wider > limits.max_tokens) {
            batches.push(start..i);
            start = i;
            longest = (*len).max(1);
        } else {
            longest = wider;
        }
    }
    if start < lengths.len() {
        batches.push(start..lengths.len());
    }
    batches
}

/// Runs the queued windows sorted by length in token-budgeted batches; if a batch fails,
/// its requests are retried one by one so a bad request cannot fail its neighbours.
fn process(
    model: &mut dyn Classifier,
    requests: Vec<Request>,
    limits: BatchLimits,
    gate: Option<&AtomicUsize>,
) {
    let windows: Vec<&[i64]> = requests
        .iter()
        .flat_map(|r| r.windows.iter().map(Vec::as_slice))
        .collect();
    // The request each window came from.
    let owners: Vec<usize> = requests
        .iter()
        .enumerate()
        .flat_map(|(r, req)| std::iter::repeat_n(r, req.windows.len()))
        .collect();
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|i| windows[*i].len());
    let lengths: Vec<usize> = order.iter().map(|i| windows[*i].len()).collect();
    let mut scores: Vec<Option<Scores>> = vec![None; windows.len()];
    let mut failed = false;
    for range in plan_batches(&lengths, limits) {
        let rows: Vec<&[i64]> = order[range.clone()].iter().map(|i| windows[*i]).collect();
        let padded = rows.iter().map(|r| r.len()).max().unwrap_or(0) * rows.len();
        yield_to_sync(gate);
        // One span per model batch, on the model thread. A batch mixes chunks (so traces):
        // it is the child of its first request's span and linked to the others'.
        let mut callers: Vec<usize> = order[range.clone()].iter().map(|i| owners[*i]).collect();
        callers.sort_unstable();
        callers.dedup();
        let parent = callers.first().and_then(|r| requests[*r].span.id());
        let batch = tracing::info_span!(parent: parent, "batch", model = %model.info().name, rows = rows.len(), padded_tokens = padded);
        for r in callers.iter().skip(1) {
            batch.follows_from(&requests[*r].span);
        }
        let _batch = batch.entered();
        let started = Instant::now();
        match model.run(&rows) {
            Ok(out) if out.len() == rows.len() => {
                let name = model.info().name.clone();
                metrics::histogram!("gatehouse_model_inference_seconds", "model" => name.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("gatehouse_model_batch_size", "model" => name.clone())
                    .record(rows.len() as f64);
                metrics::histogram!("gatehouse_model_batch_tokens", "model" => name)
                    .record(padded as f64);
                for (slot, row) in order[range].iter().zip(out) {
                    scores[*slot] = Some(row);
                }
            }
            Ok(_) | Err(_) => {
                tracing::warn!(
                    batch = rows.len(),
                    "batch failed; retrying its requests one by one"
                );
                failed = true;
                break;
            }
        }
    }
    if failed {
        for req in requests {
            let rows: Vec<&[i64]> = req.windows.iter().map(Vec::as_slice).collect();
            let result = plan_batches(&rows.iter().map(|r| r.len()).collect::<Vec<_>>(), limits)
                .into_iter()
                .try_fold(Vec::new(), |mut acc, range| {
                    acc.extend(model.run(&rows[range])?);
                    Ok(acc)
                });
            let _ = req.reply.send(result);
        }
        return;
    }
    let mut rest = scores.into_iter();
    for req in requests {
        let mine: Option<Vec<Scores>> = rest.by_ref().take(req.windows.len()).collect();
        let _ = req
            .reply
            .send(mine.ok_or_else(|| ModelError::Inference("a window was not scored".into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Scores a row by its length; records batch shapes; fails on a row holding 666.
    type Shapes = Arc<Mutex<Vec<(usize, usize)>>>;

    struct Fake {
        info: ModelInfo,
        batches: Shapes,
    }

    impl Classifier for Fake {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn run(&mut self, rows: &[&[i64]]) -> Result<Vec<Scores>, ModelError> {
            let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
            self.batches
                .lock()
                .expect("lock")
                .push((rows.len(), longest));
            if rows.iter().any(|r| r.contains(&666)) {
                return Err(ModelError::Inference("poison".into()));
            }
            Ok(rows.iter().map(|r| vec![r.len() as f32]).collect())
        }
    }

    /// One id per char (`!` is 666); windows of at most 4 ids.
    struct Chars;

    impl Encode for Chars {
        fn windows(&self, text: &str) -> Result<Vec<Vec<i64>>, ModelError> {
            let ids: Vec<i64> = text
                .chars()
                .map(|c| {
                    if c == '!' {
                        666
                    } else {
                        i64::from(u32::from(c))
                    }
                })
                .collect();
            if ids.is_empty() {
                return Ok(vec![Vec::new()]);
            }
            Ok(ids.chunks(4).map(<[i64]>::to_vec).collect())
        }
    }

    fn spawn(limits: BatchLimits) -> (ModelHandle, Shapes) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let info = ModelInfo {
            name: "fake".into(),
            content_hash: "00".into(),
            labels: vec!["len".into()],
            threshold: 0.5,
        };
        let model = Box::new(Fake {
            info,
            batches: batches.clone(),
        });
        let handle = ModelHandle::spawn(model, None, Arc::new(Chars), limits).expect("spawn");
        (handle, batches)
    }

    fn limits(max_items: usize, max_tokens: usize, wait_ms: u64) -> BatchLimits {
        BatchLimits {
            max_items,
            max_tokens,
            max_wait: Duration::from_millis(wait_ms),
        }
    }

    fn scores(out: &[TextScores]) -> Vec<f32> {
        out.iter().map(|t| t.scores[0]).collect()
    }

    #[test]
    fn plans_respect_the_token_budget_and_the_row_limit() {
        let l = limits(3, 10, 0);
        assert_eq!(
            plan_batches(&[1, 2, 2, 3, 4, 9, 20], l),
            vec![0..3, 3..5, 5..6, 6..7]
        );
        assert!(plan_batches(&[], l).is_empty());
        // Rows never exceed max_items even when tokens allow it.
        assert_eq!(plan_batches(&[1; 7], l), vec![0..3, 3..6, 6..7]);
    }

    #[tokio::test]
    async fn batches_fill_across_requests_and_answers_keep_their_order() {
        let (handle, batches) = spawn(limits(8, 1000, 200));
        let a = handle.classify(vec!["a".into(), "bb".into(), "ccc".into()]);
        let b = handle.classify(vec!["dddd".into(), "e".into()]);
        let (a, b) = tokio::join!(a, b);
        assert_eq!(scores(&a.expect("a")), [1.0, 2.0, 3.0]);
        assert_eq!(scores(&b.expect("b")), [4.0, 1.0]);
        // Both requests went through one model batch, padded to its longest row.
        assert_eq!(*batches.lock().expect("lock"), vec![(5, 4)]);
    }

    #[tokio::test]
    async fn sorted_batches_stay_within_the_token_budget() {
        let (handle, batches) = spawn(limits(64, 8, 1));
        let texts: Vec<String> = ["aaaa", "a", "aaa", "a", "aa", "aaaa"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = handle.classify(texts).await.expect("classify");
        assert_eq!(scores(&out), [4.0, 1.0, 3.0, 1.0, 2.0, 4.0]);
        let seen = batches.lock().expect("lock").clone();
        assert!(
            seen.iter().all(|(rows, longest)| rows * longest <= 8),
            "{seen:?}"
        );
        // Sorted by length: the short rows share batches instead of padding to 4.
        assert_eq!(seen, vec![(3, 2), (2, 4), (1, 4)]);
    }

    #[tokio::test]
    async fn long_texts_take_several_windows_and_keep_the_worst() {
        let (handle, _) = spawn(limits(64, 1000, 1));
        let out = handle
            .classify(vec!["abcdefghij".into(), String::new()])
            .await
            .expect("classify");
        // 10 chars → windows of 4, 4, 2: the worst window scores 4.
        assert_eq!(
            out[0],
            TextScores {
                scores: vec![4.0],
                windows: 3,
                per_window: vec![vec![4.0], vec![4.0], vec![2.0]],
            }
        );
        assert_eq!(
            out[1],
            TextScores {
                scores: vec![0.0],
                windows: 1,
                per_window: vec![vec![0.0]],
            }
        );
    }

    #[tokio::test]
    async fn a_failing_request_does_not_fail_its_batch_neighbours() {
        let (handle, _) = spawn(limits(8, 1000, 200));
        let good = handle.classify(vec!["ok".into()]);
        let bad = handle.classify(vec!["x!".into()]);
        let (good, bad) = tokio::join!(good, bad);
        assert_eq!(scores(&good.expect("good")), [2.0]);
        assert!(matches!(bad, Err(ModelError::Inference(_))));
    }
}
