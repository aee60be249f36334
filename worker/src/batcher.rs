//! The model is owned by one OS thread fed by a channel. The thread fills model batches
//! across requests (chunks from different messages and tenants): it takes whatever is
//! queued, waits at most `max_wait` for more, then runs batches of at most `max_items`.

use std::{
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::model::{Classifier, ModelError, ModelInfo};

type Scores = Vec<Vec<f32>>;

struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Scores, ModelError>>,
}

/// Cheap to clone; dropping every handle stops the model thread.
#[derive(Clone)]
pub struct ModelHandle {
    tx: mpsc::Sender<Request>,
    info: Arc<ModelInfo>,
}

impl ModelHandle {
    /// Moves `model` onto its own thread.
    pub fn spawn(
        mut model: Box<dyn Classifier>,
        max_items: usize,
        max_wait: Duration,
    ) -> std::io::Result<Self> {
        let info = Arc::new(model.info().clone());
        let (tx, rx) = mpsc::channel::<Request>();
        let max_items = max_items.max(1);
        thread::Builder::new()
            .name(format!("model-{}", info.name))
            .spawn(move || run(model.as_mut(), &rx, max_items, max_wait))?;
        Ok(Self { tx, info })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Scores for `texts`, in order.
    pub async fn classify(&self, texts: Vec<String>) -> Result<Scores, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { texts, reply })
            .map_err(|_| ModelError::Stopped)?;
        rx.await.map_err(|_| ModelError::Stopped)?
    }
}

fn run(
    model: &mut dyn Classifier,
    rx: &mpsc::Receiver<Request>,
    max_items: usize,
    max_wait: Duration,
) {
    while let Ok(first) = rx.recv() {
        let mut requests = vec![first];
        let mut queued = requests[0].texts.len();
        let deadline = Instant::now() + max_wait;
        while queued < max_items {
            match rx.try_recv() {
                Ok(req) => {
                    queued += req.texts.len();
                    requests.push(req);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(req) => {
                    queued += req.texts.len();
                    requests.push(req);
                }
                Err(_) => break,
            }
        }
        process(model, requests, max_items);
    }
}

/// Runs the queued requests as batches of at most `max_items`; if a batch fails, its
/// requests are retried one by one so a bad request cannot fail its neighbours.
fn process(model: &mut dyn Classifier, requests: Vec<Request>, max_items: usize) {
    let texts: Vec<String> = requests
        .iter()
        .flat_map(|r| r.texts.iter().cloned())
        .collect();
    let mut scores: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    let mut failed = false;
    for batch in texts.chunks(max_items) {
        let started = Instant::now();
        match model.classify(batch) {
            Ok(out) => {
                metrics::histogram!("gatehouse_model_inference_seconds", "model" => model.info().name.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("gatehouse_model_batch_size", "model" => model.info().name.clone())
                    .record(batch.len() as f64);
                scores.extend(out);
            }
            Err(error) => {
                tracing::warn!(%error, batch = batch.len(), "batch failed; retrying its requests one by one");
                failed = true;
                break;
            }
        }
    }
    if failed {
        for req in requests {
            let result = req
                .texts
                .chunks(max_items)
                .try_fold(Vec::new(), |mut acc, part| {
                    acc.extend(model.classify(part)?);
                    Ok(acc)
                });
            let _ = req.reply.send(result);
        }
        return;
    }
    let mut rest = scores.into_iter();
    for req in requests {
        let mine: Scores = rest.by_ref().take(req.texts.len()).collect();
        let _ = req.reply.send(Ok(mine));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Scores a text by its length; records batch sizes; fails on "poison".
    struct Fake {
        info: ModelInfo,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Classifier for Fake {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn classify(&mut self, texts: &[String]) -> Result<Scores, ModelError> {
            self.batches.lock().expect("lock").push(texts.len());
            if texts.iter().any(|t| t == "poison") {
                return Err(ModelError::Inference("poison".into()));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    fn fake() -> (Box<Fake>, Arc<Mutex<Vec<usize>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let info = ModelInfo {
            name: "fake".into(),
            content_hash: "00".into(),
            labels: vec!["len".into()],
            threshold: 0.5,
        };
        (
            Box::new(Fake {
                info,
                batches: batches.clone(),
            }),
            batches,
        )
    }

    #[tokio::test]
    async fn batches_fill_across_requests_and_answers_keep_their_order() {
        let (model, batches) = fake();
        let handle = ModelHandle::spawn(model, 8, Duration::from_millis(200)).expect("spawn");
        let a = handle.classify(vec!["a".into(), "bb".into(), "ccc".into()]);
        let b = handle.classify(vec!["dddd".into(), "eeeee".into()]);
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.expect("a"), vec![vec![1.0], vec![2.0], vec![3.0]]);
        assert_eq!(b.expect("b"), vec![vec![4.0], vec![5.0]]);
        // Both requests went through one model batch.
        assert_eq!(*batches.lock().expect("lock"), vec![5]);
    }

    #[tokio::test]
    async fn large_requests_are_split_into_bounded_batches() {
        let (model, batches) = fake();
        let handle = ModelHandle::spawn(model, 4, Duration::from_millis(1)).expect("spawn");
        let texts: Vec<String> = (0..10).map(|i| "x".repeat(i + 1)).collect();
        let out = handle.classify(texts).await.expect("classify");
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], vec![10.0]);
        assert!(batches.lock().expect("lock").iter().all(|n| *n <= 4));
    }

    #[tokio::test]
    async fn a_failing_request_does_not_fail_its_batch_neighbours() {
        let (model, _) = fake();
        let handle = ModelHandle::spawn(model, 8, Duration::from_millis(200)).expect("spawn");
        let good = handle.classify(vec!["ok".into()]);
        let bad = handle.classify(vec!["poison".into()]);
        let (good, bad) = tokio::join!(good, bad);
        assert_eq!(good.expect("good"), vec![vec![2.0]]);
        assert!(matches!(bad, Err(ModelError::Inference(_))));
    }
}
