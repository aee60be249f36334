//! Greedy and beam search over [`Translator::decoder_step`], batched across sentences.

use super::{
    Translator,
    step::{Encoded, State},
};
use crate::model::ModelError;

/// Which decoder file a past-key-values model runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cache {
    /// `decoder_with_past` if present, else the merged decoder, else no cache.
    #[default]
    Auto,
    /// No cache: the whole prefix at every step.
    Off,
    WithPast,
    Merged,
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// 1 = greedy.
    pub beam_size: usize,
    /// `None`: the manifest's `max_new_tokens`.
    pub max_new_tokens: Option<usize>,
    /// Beam hypotheses are ranked by `sum log p / len^length_penalty`.
    pub length_penalty: f32,
    pub cache: Cache,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            beam_size: 1,
            max_new_tokens: None,
            length_penalty: 1.0,
            cache: Cache::Auto,
        }
    }
}

/// The first index of the largest value (ties: lowest index, like numpy's argmax).
fn argmax(row: ndarray::ArrayView1<'_, f32>) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// A beam hypothesis: generated ids (no start token) and its summed log-probability.
#[derive(Debug, Clone)]
struct Hypothesis {
    ids: Vec<i64>,
    logp: f32,
}

fn normalized(logp: f32, len: usize, length_penalty: f32) -> f32 {
    logp / (len.max(1) as f32).powf(length_penalty)
}

impl Translator {
    /// Translates token sequences (from [`Translator::encode_source`]); returns the generated
    /// ids of each, without the decoder start token and the final EOS.
    pub fn generate(
        &mut self,
        sources: &[Vec<i64>],
        options: DecodeOptions,
    ) -> Result<Vec<Vec<i64>>, ModelError> {
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let max_new = options
            .max_new_tokens
            .unwrap_or(self.manifest.max_new_tokens)
            .max(1);
        let mode = self.resolve_mode(options.cache)?;
        let encoded = self.run_encoder(sources)?;
        if options.beam_size <= 1 {
            self.greedy(mode, &encoded, sources.len(), max_new)
        } else {
            self.beam(
                mode,
                &encoded,
                sources.len(),
                max_new,
                options.beam_size,
                options.length_penalty,
            )
        }
    }

    fn greedy(
        &mut self,
        mode: super::step::Mode,
        encoded: &Encoded,
        batch: usize,
        max_new: usize,
    ) -> Result<Vec<Vec<i64>>, ModelError> {
        let tokens = self.manifest.tokens;
        let rows: Vec<usize> = (0..batch).collect();
        let rows_enc = encoded.rows(&rows);
        let mut state = self.initial_state(mode, &rows_enc)?;
        let mut prefixes = vec![vec![tokens.decoder_start]; batch];
        let mut outputs = vec![Vec::new(); batch];
        let mut finished = vec![false; batch];
        let model = self.manifest.name.clone();
        for _ in 0..max_new {
            let logp = self.decoder_step(mode, &prefixes, &rows_enc, &mut state)?;
            metrics::counter!("gatehouse_translate_decode_steps_total", "model" => model.clone())
                .increment(1);
            for r in 0..batch {
                let next = if finished[r] {
                    tokens.pad
                } else {
                    let token = i64::try_from(argmax(logp.row(r))).unwrap_or(tokens.eos);
                    if token == tokens.eos {
                        finished[r] = true;
                    } else {
                        outputs[r].push(token);
                    }
                    token
                };
                prefixes[r].push(next);
            }
            if finished.iter().all(|f| *f) {
                break;
            }
        }
        Ok(outputs)
    }

    /// Beam search, per source: keep `beam` live hypotheses; each step every live one is
    /// extended by every token, the best `2 * beam` candidates are scanned in order, an EOS
    /// among the first `beam` of them finishes a hypothesis (scored `logp / len^penalty`, len =
    /// generated tokens including the EOS), the others fill the next live set. A source is done
    /// when it has `beam` finished hypotheses and the best live one, normalised at the current
    /// length, cannot beat the worst finished one; at `max_new` the live ones are finished as
    /// they are. The best finished hypothesis wins.
    fn beam(
        &mut self,
        mode: super::step::Mode,
        encoded: &Encoded,
        batch: usize,
        max_new: usize,
        beam: usize,
        length_penalty: f32,
    ) -> Result<Vec<Vec<i64>>, ModelError> {
        let tokens = self.manifest.tokens;
        // Row r serves source r / beam; at first only the first beam of each source is live.
        let rows: Vec<usize> = (0..batch * beam).map(|r| r / beam).collect();
        let rows_enc = encoded.rows(&rows);
        let mut state: State = self.initial_state(mode, &rows_enc)?;
        let mut live: Vec<Vec<Hypothesis>> = vec![
            vec![Hypothesis {
                ids: Vec::new(),
                logp: 0.0
            }];
            batch
        ];
        let mut done: Vec<Vec<(f32, Vec<i64>)>> = vec![Vec::new(); batch];
        let mut closed = vec![false; batch];
        // Row of each live hypothesis: row index in the current decoder state.
        let mut row_of: Vec<Vec<usize>> = (0..batch).map(|b| vec![b * beam]).collect();

        for step in 0..max_new {
            // Prefixes for every row (dead rows repeat a live one's prefix; their scores are ignored).
            let mut prefixes = vec![vec![tokens.decoder_start]; batch * beam];
            for b in 0..batch {
                for r in 0..beam {
                    let h = &live[b][r.min(live[b].len() - 1)];
                    let mut p = Vec::with_capacity(h.ids.len() + 1);
                    p.push(tokens.decoder_start);
                    p.extend_from_slice(&h.ids);
                    prefixes[b * beam + r] = p;
                }
            }
            // Closed sources stop growing: pad their rows to the common length.
            let longest = prefixes.iter().map(Vec::len).max().unwrap_or(1);
            for p in &mut prefixes {
                p.resize(longest, tokens.pad);
            }
            let logp = self.decoder_step(mode, &prefixes, &rows_enc, &mut state)?;
            metrics::counter!("gatehouse_translate_decode_steps_total", "model" => self.manifest.name.clone()).increment(1);
            let vocab = logp.ncols();
            let mut next_rows = Vec::with_capacity(batch * beam);
            let mut next_live: Vec<Vec<Hypothesis>> = Vec::with_capacity(batch);
            for b in 0..batch {
                if closed[b] {
                    next_live.push(live[b].clone());
                    next_rows.extend(std::iter::repeat_n(b * beam, beam));
                    continue;
                }
                let mut candidates: Vec<(f32, usize, usize)> =
                    Vec::with_capacity(live[b].len() * vocab);
                for (h, hyp) in live[b].iter().enumerate() {
                    let row = row_of[b][h];
                    for (v, lp) in logp.row(row).iter().enumerate() {
                        candidates.push((hyp.logp + lp, h, v));
                    }
                }
                // Best first; ties keep the earlier (hypothesis, token) order.
                candidates.sort_by(|a, c| c.0.total_cmp(&a.0));
                let mut chosen: Vec<(Hypothesis, usize)> = Vec::with_capacity(beam);
                for (rank, (score, h, v)) in candidates.into_iter().take(2 * beam).enumerate() {
                    let token = i64::try_from(v).unwrap_or(tokens.eos);
                    if token == tokens.eos {
                        if rank < beam {
                            let ids = live[b][h].ids.clone();
                            let norm = normalized(score, ids.len() + 1, length_penalty);
                            done[b].push((norm, ids));
                        }
                        continue;
                    }
                    let mut ids = live[b][h].ids.clone();
                    ids.push(token);
                    chosen.push((Hypothesis { ids, logp: score }, row_of[b][h]));
                    if chosen.len() == beam {
                        break;
                    }
                }
                // Keep the best `beam` finished hypotheses.
                done[b].sort_by(|a, c| c.0.total_cmp(&a.0));
                done[b].truncate(beam);
                let best_live = chosen.first().map_or(f32::NEG_INFINITY, |(h, _)| h.logp);
                if done[b].len() == beam {
                    let worst_done = done[b].last().map_or(f32::NEG_INFINITY, |d| d.0);
                    if worst_done >= normalized(best_live, step + 1, length_penalty) {
                        closed[b] = true;
                    }
                }
                for (_, row) in &chosen {
                    next_rows.push(*row);
                }
                while next_rows.len() < (b + 1) * beam {
                    next_rows.push(chosen.first().map_or(b * beam, |(_, r)| *r));
                }
                next_live.push(chosen.into_iter().map(|(h, _)| h).collect());
            }
            state.select(&next_rows);
            for (b, hyps) in next_live.iter().enumerate() {
                row_of[b] = (0..hyps.len()).map(|h| b * beam + h).collect();
            }
            live = next_live;
            if closed.iter().all(|c| *c) {
                break;
            }
        }
        let mut outputs = Vec::with_capacity(batch);
        for b in 0..batch {
            if !closed[b] {
                for hyp in &live[b] {
                    done[b].push((
                        normalized(hyp.logp, hyp.ids.len(), length_penalty),
                        hyp.ids.clone(),
                    ));
                }
                done[b].sort_by(|a, c| c.0.total_cmp(&a.0));
            }
            outputs.push(done[b].first().map(|d| d.1.clone()).unwrap_or_default());
        }
        Ok(outputs)
    }
}
