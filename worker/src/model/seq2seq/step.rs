//! One encoder run and one decoder step, for each kind of carried state.

use std::borrow::Cow;

use ndarray::{Array1, Array2, ArrayD, Axis, Ix3, IxDyn};
use ort::{
    session::{Session, SessionInputValue},
    value::Tensor,
};

use super::{
    Translator,
    manifest::{Logits, StateKind, name},
};
use crate::model::ModelError;

type Inputs<'a> = Vec<(Cow<'a, str>, SessionInputValue<'a>)>;

fn fail(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(e.to_string())
}

fn tensor<T, D>(array: ndarray::Array<T, D>) -> Result<SessionInputValue<'static>, ModelError>
where
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
    D: ndarray::Dimension + 'static,
{
    Ok(Tensor::from_array(array.into_dyn()).map_err(fail)?.into())
}

fn accepts(session: &Session, input: &str) -> bool {
    session.inputs().iter().any(|i| i.name() == input)
}

fn run(
    session: &mut Session,
    inputs: Inputs<'_>,
) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
    let wanted: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let outputs = session.run(inputs).map_err(fail)?;
    let mut collected = Vec::with_capacity(wanted.len());
    for name in wanted {
        if let Some(value) = outputs.get(&name)
            && let Ok(array) = value.try_extract_array::<f32>()
        {
            collected.push((name, array.to_owned()));
        }
    }
    Ok(collected)
}

fn take(outputs: &mut Vec<(String, ArrayD<f32>)>, wanted: &str) -> Result<ArrayD<f32>, ModelError> {
    let position = outputs
        .iter()
        .position(|(n, _)| n == wanted)
        .ok_or_else(|| ModelError::Inference(format!("the model has no output `{wanted}`")))?;
    Ok(outputs.swap_remove(position).1)
}

/// The encoder's outputs for a batch of sources, one row per source.
pub(super) struct Encoded {
    /// `[batch, len, hidden]` when the decoder attends to it.
    pub hidden: Option<ArrayD<f32>>,
    /// `[batch, len]`, 1 for tokens.
    pub mask: Array2<i64>,
    /// `[layers, batch, hidden]` for recurrent decoders.
    pub final_state: Option<ArrayD<f32>>,
}

impl Encoded {
    /// The rows `rows` (a source index per decoding row, e.g. repeated for beams).
    pub fn rows(&self, rows: &[usize]) -> Encoded {
        Encoded {
            hidden: self.hidden.as_ref().map(|h| h.select(Axis(0), rows)),
            mask: self.mask.select(Axis(0), rows),
            final_state: self.final_state.as_ref().map(|s| s.select(Axis(1), rows)),
        }
    }
}

/// What the decoder carries from one step to the next.
pub(super) enum State {
    /// `[layers, rows, hidden]`.
    Recurrent(ArrayD<f32>),
    /// No cache yet (first step of a cached decoder).
    Fresh,
    /// Per layer: decoder key, decoder value, encoder key, encoder value (`[rows, heads, seq, dim]`).
    Past(Vec<[ArrayD<f32>; 4]>),
    /// No cache: the whole prefix is fed at every step.
    Prefix,
}

impl State {
    /// Keeps the rows `rows`, in that order (beam reordering).
    pub fn select(&mut self, rows: &[usize]) {
        match self {
            State::Recurrent(s) => *s = s.select(Axis(1), rows),
            State::Past(layers) => {
                for layer in layers.iter_mut() {
                    for t in layer.iter_mut() {
                        *t = t.select(Axis(0), rows);
                    }
                }
            }
            State::Fresh | State::Prefix => {}
        }
    }
}

/// How a past-key-values decoder is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Recurrent,
    Prefix,
    WithPast,
    Merged,
}

const KINDS: [&str; 4] = [
    "decoder.key",
    "decoder.value",
    "encoder.key",
    "encoder.value",
];

impl Translator {
    pub(super) fn run_encoder(&mut self, sources: &[Vec<i64>]) -> Result<Encoded, ModelError> {
        let spec = self.manifest.encoder.clone();
        let pad = self.manifest.tokens.pad;
        let batch = sources.len();
        let len = sources.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Array2::<i64>::from_elem((batch, len), pad);
        let mut mask = Array2::<i64>::zeros((batch, len));
        let mut lens = Array1::<i32>::zeros(batch);
        for (r, source) in sources.iter().enumerate() {
            for (c, id) in source.iter().enumerate() {
                ids[[r, c]] = *id;
                mask[[r, c]] = 1;
            }
            lens[r] = i32::try_from(source.len().max(1)).map_err(fail)?;
        }
        let mut inputs: Inputs = Vec::new();
        if let Some(n) = name(&spec.inputs, "input_ids") {
            inputs.push((n.to_string().into(), tensor(ids)?));
        }
        if let Some(n) = name(&spec.inputs, "attention_mask") {
            inputs.push((n.to_string().into(), tensor(mask.clone())?));
        }
        if let Some(n) = name(&spec.inputs, "sequence_lengths") {
            inputs.push((n.to_string().into(), tensor(lens)?));
        }
        let mut outputs = run(&mut self.encoder, inputs)?;
        let hidden = match name(&spec.outputs, "hidden_states") {
            Some(n) if name(&self.manifest.decoder.inputs, "encoder_hidden_states").is_some() => {
                Some(take(&mut outputs, n)?)
            }
            _ => None,
        };
        let final_state = match &self.manifest.decoder.recurrent {
            Some(r) if self.manifest.decoder.state == StateKind::Recurrent => {
                Some(take(&mut outputs, &r.initial)?)
            }
            _ => None,
        };
        Ok(Encoded {
            hidden,
            mask,
            final_state,
        })
    }

    pub(super) fn resolve_mode(&self, cache: super::Cache) -> Result<Mode, ModelError> {
        use super::Cache;
        if self.manifest.decoder.state == StateKind::Recurrent {
            return Ok(Mode::Recurrent);
        }
        let mode = match cache {
            Cache::Off => Mode::Prefix,
            Cache::WithPast => Mode::WithPast,
            Cache::Merged => Mode::Merged,
            Cache::Auto if self.with_past.is_some() => Mode::WithPast,
            Cache::Auto if self.merged.is_some() => Mode::Merged,
            Cache::Auto => Mode::Prefix,
        };
        match mode {
            Mode::WithPast if self.with_past.is_none() => Err(ModelError::Load(
                "no decoder_with_past file in the manifest".into(),
            )),
            Mode::Merged if self.merged.is_none() => Err(ModelError::Load(
                "no merged decoder file in the manifest".into(),
            )),
            m => Ok(m),
        }
    }

    pub(super) fn initial_state(&self, mode: Mode, rows: &Encoded) -> Result<State, ModelError> {
        Ok(match mode {
            Mode::Recurrent => State::Recurrent(
                rows.final_state
                    .clone()
                    .ok_or_else(|| ModelError::Inference("no encoder final state".into()))?,
            ),
            Mode::Prefix => State::Prefix,
            Mode::WithPast | Mode::Merged => State::Fresh,
        })
    }

    /// Log-probabilities `[rows, vocab]` of the next token after each prefix (all prefixes have
    /// the same length; each starts with the decoder start token).
    pub(super) fn decoder_step(
        &mut self,
        mode: Mode,
        prefixes: &[Vec<i64>],
        rows: &Encoded,
        state: &mut State,
    ) -> Result<Array2<f32>, ModelError> {
        let spec = self.manifest.decoder.clone();
        let n_rows = prefixes.len();
        let last: Array2<i64> =
            Array2::from_shape_fn((n_rows, 1), |(r, _)| *prefixes[r].last().unwrap_or(&0));
        let ids_name = name(&spec.inputs, "input_ids")
            .unwrap_or("input_ids")
            .to_string();
        let logits_name = name(&spec.outputs, "logits")
            .unwrap_or("logits")
            .to_string();
        let past = spec.past.clone();
        let fresh = matches!(state, State::Fresh);

        let session: &mut Session = match mode {
            Mode::Recurrent | Mode::Prefix => &mut self.decoder,
            Mode::WithPast if fresh => &mut self.decoder,
            Mode::WithPast => self
                .with_past
                .as_mut()
                .ok_or_else(|| fail("no decoder_with_past"))?,
            Mode::Merged => self
                .merged
                .as_mut()
                .ok_or_else(|| fail("no merged decoder"))?,
        };
        let mut inputs: Inputs = Vec::new();
        let ids = if mode == Mode::Prefix {
            let t = prefixes.first().map_or(1, Vec::len);
            Array2::from_shape_fn((n_rows, t), |(r, c)| prefixes[r][c])
        } else {
            last
        };
        inputs.push((ids_name.into(), tensor(ids)?));
        if let (Some(n), Some(hidden)) = (name(&spec.inputs, "encoder_hidden_states"), &rows.hidden)
            && accepts(session, n)
        {
            inputs.push((n.to_string().into(), tensor(hidden.clone())?));
        }
        if let Some(n) = name(&spec.inputs, "encoder_attention_mask")
            && accepts(session, n)
        {
            inputs.push((n.to_string().into(), tensor(rows.mask.clone())?));
        }
        // A merged decoder takes a branch flag and past inputs even when there is no past yet.
        let has_past = matches!(state, State::Past(_));
        if let Some(n) = name(&spec.inputs, "use_cache_branch")
            && accepts(session, n)
        {
            inputs.push((
                n.to_string().into(),
                tensor(Array1::from_elem(1, has_past))?,
            ));
        }
        match state {
            State::Recurrent(hidden) => {
                let input = spec
                    .recurrent
                    .as_ref()
                    .map(|r| r.input.clone())
                    .unwrap_or_default();
                inputs.push((input.into(), tensor(hidden.clone())?));
            }
            State::Past(layers) => {
                let p = past.as_ref().ok_or_else(|| fail("no past spec"))?;
                for (i, layer) in layers.iter().enumerate() {
                    for (kind, t) in KINDS.iter().zip(layer.iter()) {
                        let n = format!("{}.{i}.{kind}", p.input_prefix);
                        if accepts(session, &n) {
                            inputs.push((n.into(), tensor(t.clone())?));
                        }
                    }
                }
            }
            State::Fresh | State::Prefix => {
                // The no-cache branch ignores them, but the graph still wants them (Optimum
                // passes zeros with one position).
                if let Some(p) = past.as_ref() {
                    for i in 0..p.layers {
                        for kind in KINDS {
                            let n = format!("{}.{i}.{kind}", p.input_prefix);
                            if accepts(session, &n) {
                                let dummy =
                                    ArrayD::<f32>::zeros(IxDyn(&[n_rows, p.heads, 1, p.head_dim]));
                                inputs.push((n.into(), tensor(dummy)?));
                            }
                        }
                    }
                }
            }
        }

        let mut outputs = run(session, inputs)?;
        let logits = take(&mut outputs, &logits_name)?
            .into_dimensionality::<Ix3>()
            .map_err(fail)?;
        let position = logits.shape()[1] - 1;
        let mut next = logits.index_axis(Axis(1), position).to_owned();
        if spec.logits == Logits::Raw {
            for mut row in next.rows_mut() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
                let log_sum = max + sum.ln();
                row.mapv_inplace(|x| x - log_sum);
            }
        }

        let tokens = self.manifest.tokens;
        if tokens.pad != tokens.eos
            && let Ok(pad) = usize::try_from(tokens.pad)
            && pad < next.ncols()
        {
            // Padding is never generated (as Hugging Face's generate forbids it).
            next.column_mut(pad).fill(f32::NEG_INFINITY);
        }

        match state {
            State::Recurrent(hidden) => {
                let output = spec
                    .recurrent
                    .as_ref()
                    .map(|r| r.output.clone())
                    .unwrap_or_default();
                *hidden = take(&mut outputs, &output)?;
            }
            State::Fresh | State::Past(_) if mode != Mode::Prefix => {
                let p = past.as_ref().ok_or_else(|| fail("no past spec"))?;
                let previous = match std::mem::replace(state, State::Fresh) {
                    State::Past(layers) => Some(layers),
                    _ => None,
                };
                let mut layers = Vec::with_capacity(p.layers);
                for i in 0..p.layers {
                    let mut layer: Vec<ArrayD<f32>> = Vec::with_capacity(4);
                    for (k, kind) in KINDS.iter().enumerate() {
                        let n = format!("{}.{i}.{kind}", p.output_prefix);
                        // The encoder's keys and values come from the first step: decoders with
                        // past don't re-emit them, and merged ones emit empty placeholders.
                        let kept = if k >= 2 {
                            previous
                                .as_ref()
                                .and_then(|prev| prev.get(i))
                                .map(|prev| prev[k].clone())
                        } else {
                            None
                        };
                        let value = match kept {
                            Some(v) => v,
                            None => take(&mut outputs, &n)?,
                        };
                        layer.push(value);
                    }
                    let [a, b, c, d]: [ArrayD<f32>; 4] =
                        layer.try_into().map_err(|_| fail("past layer shape"))?;
                    layers.push([a, b, c, d]);
                }
                *state = State::Past(layers);
            }
            _ => {}
        }
        Ok(next)
    }
}
