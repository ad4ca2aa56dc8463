//! Token-level attention of sentence pairs, taken from the same forward pass as the sentence
//! averages (the trace explorer's CircuitsVis-style token view).
//!
//! Keeping `L × H × T²` is out of the question at 16k tokens, and which heads and pairs matter is
//! only known after the pass (receiver heads come from the finished sentence matrices). So
//! [`TokenPairCapture`] keeps, for every head (or the heads asked for) and every sentence `i`,
//! one bounded block: the pair of `i` and its **top source**, the earlier sentence `j < i` with
//! the largest block mean (the cell of the sentence matrix, clipped ranges and all, computed from
//! the same rows), cut to the first `max_tokens` query tokens of `i` × the first `max_tokens` key
//! tokens of `j`. The sentence holding the text's first token is passed over when `i` has
//! another earlier sentence: that token is where attention sinks (most heads put most of every
//! row on it), so it would be every sentence's top source in every head and the view would show
//! nothing else ([`TokenPairOptions::skip_sink`]). The top source is known when the last row of
//! `i` has arrived, so each head holds at most the first `max_tokens` rows of its open sentence
//! (`max_tokens × T` floats) and a length-`T` column sum while it streams. The result is `heads × N` blocks of at most
//! `max_tokens²` values; the caller keeps the heads it shows.
//!
//! [`sentence_attention_with_token_pairs`] runs one forward pass feeding both the
//! [`SentenceAverager`] and the capture, so the token blocks and the sentence matrices are the
//! same pass's numbers: a block's full mean ([`TokenPair::mean`]) is its sentence-matrix cell.

use rayon::prelude::*;

use super::pass::{check_bytes_fit, encode_within_context, LayerProgress};
use super::{AttentionBlock, AttentionSink, BoundaryMode, HeadConsumer, SentenceAttention, SentenceAverager, Sentences, TokenBounds};
use crate::model::{HookSet, Input, KvCache, Loaded, Logits};
use crate::progress::progress_detail;
use crate::{Error, Result};

/// What the capture keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPairOptions {
    /// Tokens kept per sentence, on each side of a pair (a block is at most `max_tokens²`).
    pub max_tokens: usize,
    /// Heads `(layer, head)` captured; `None`: every head (the receiver heads are chosen after
    /// the pass).
    pub heads: Option<Vec<(usize, usize)>>,
    /// Pass over the sentence holding token 0 (the attention sink) when there is another
    /// earlier sentence.
    pub skip_sink: bool,
}

impl Default for TokenPairOptions {
    fn default() -> Self {
        TokenPairOptions { max_tokens: 16, heads: None, skip_sink: true }
    }
}

/// Sentence `i` and its top source `j` in one head.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPair {
    /// The earlier sentence `j` with the largest block mean (ties: the first; the sink's
    /// sentence passed over, see [`TokenPairOptions::skip_sink`]).
    pub source: usize,
    /// Mean of the whole block, all tokens of `i` × all tokens of `j` (the sentence matrix's cell).
    pub mean: f64,
    /// Query tokens kept: the first `rows` of sentence `i`.
    pub rows: usize,
    /// Key tokens kept: the first `cols` of sentence `j`.
    pub cols: usize,
    /// `rows × cols`, row-major: `values[r * cols + c]` = attention from token `r` of `i` to
    /// token `c` of `j`.
    pub values: Vec<f32>,
}

/// The pairs of one head, one entry per sentence (`None`: no earlier sentence with tokens, or the
/// sentence has no tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTokenPairs {
    pub layer: usize,
    pub head: usize,
    pub pairs: Vec<Option<TokenPair>>,
}

/// Everything captured.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPairs {
    pub max_tokens: usize,
    /// Token range of each sentence as the averages use it (clipped to `T − 1`).
    pub ranges: Vec<(usize, usize)>,
    /// Captured heads, by layer then head.
    pub heads: Vec<HeadTokenPairs>,
    /// The first `max_tokens` tokens of each sentence, each decoded alone (filled by
    /// [`sentence_attention_with_token_pairs`]; empty lists from a bare capture).
    pub tokens: Vec<Vec<String>>,
}

impl TokenPairs {
    /// The pairs of head `(layer, head)`, if captured.
    pub fn head(&self, layer: usize, head: usize) -> Option<&HeadTokenPairs> {
        self.heads.iter().find(|h| h.layer == layer && h.head == head)
    }

    /// Tokens of sentence `i` in the averages' range.
    pub fn sentence_tokens(&self, i: usize) -> usize {
        let (start, end) = self.ranges[i];
        end.saturating_sub(start)
    }

    /// The pairs of `heads` only, in that order (heads not captured are left out).
    pub fn select(&self, heads: &[(usize, usize)]) -> TokenPairs {
        TokenPairs {
            max_tokens: self.max_tokens,
            ranges: self.ranges.clone(),
            heads: heads.iter().filter_map(|&(l, h)| self.head(l, h).cloned()).collect(),
            tokens: self.tokens.clone(),
        }
    }

    /// The same pairs cut to the first `max_tokens` tokens on each side: what a capture with
    /// that `max_tokens` keeps (the top source does not depend on it). A larger `max_tokens`
    /// changes nothing.
    pub fn truncated(&self, max_tokens: usize) -> TokenPairs {
        if max_tokens >= self.max_tokens {
            return self.clone();
        }
        let cut = |pair: &TokenPair| {
            let (rows, cols) = (pair.rows.min(max_tokens), pair.cols.min(max_tokens));
            let values = (0..rows).flat_map(|r| pair.values[r * pair.cols..r * pair.cols + cols].iter().copied()).collect();
            TokenPair { source: pair.source, mean: pair.mean, rows, cols, values }
        };
        TokenPairs {
            max_tokens,
            ranges: self.ranges.clone(),
            heads: self
                .heads
                .iter()
                .map(|head| HeadTokenPairs { layer: head.layer, head: head.head, pairs: head.pairs.iter().map(|p| p.as_ref().map(cut)).collect() })
                .collect(),
            tokens: self.tokens.iter().map(|t| t.iter().take(max_tokens).cloned().collect()).collect(),
        }
    }

    /// Float32 values held (the stored size's unit: 4 bytes each).
    pub fn value_count(&self) -> usize {
        self.heads.iter().flat_map(|h| h.pairs.iter().flatten()).map(|p| p.values.len()).sum()
    }
}

/// The token pairs a cache fill stores beside the sentence averages
/// ([`super::cached_sentence_attention`]), so the trace explorer has its token view on a later
/// cache hit. The pass captures every head (the receiver heads are known only when it ends);
/// `choose` then picks the heads kept from the finished sentence attention. It is given by a
/// layer above this one (the trace explorer's `ExplorerOptions::token_pairs_to_store`), which
/// knows how receiver heads are selected.
#[derive(Clone)]
pub struct TokenPairsToStore {
    /// Tokens kept per sentence on each side of a pair.
    pub max_tokens: usize,
    /// How `choose` picks the heads, in words: recorded in the entry's manifest.
    pub selection: String,
    /// The heads kept, from the sentence attention of the pass.
    pub choose: std::sync::Arc<dyn Fn(&SentenceAttention) -> Vec<(usize, usize)> + Send + Sync>,
    /// Also recompute an entry of ours that has no token pairs (one pass; the entry is replaced).
    /// Off, such an entry is served as it is.
    pub add_to_existing: bool,
}

impl std::fmt::Debug for TokenPairsToStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPairsToStore")
            .field("max_tokens", &self.max_tokens)
            .field("selection", &self.selection)
            .field("add_to_existing", &self.add_to_existing)
            .finish()
    }
}

/// A sentence whose rows are streaming in one head.
#[derive(Debug)]
struct Open {
    sentence: usize,
    /// Σ over the sentence's rows so far of `A[q, k]`, `k` below the sentence's end.
    column_sums: Vec<f64>,
    /// Its first `max_tokens` rows, each `column_sums.len()` wide.
    kept: Vec<f32>,
    kept_rows: usize,
    rows_seen: usize,
}

#[derive(Debug, Default)]
struct HeadState {
    captured: bool,
    /// Next entry of `Layout::starts` to open.
    cursor: usize,
    open: Vec<Open>,
    pairs: Vec<Option<TokenPair>>,
}

/// Where sentences start and end (fixed by the first block's `T`).
#[derive(Debug)]
struct Layout {
    total: usize,
    clipped: Vec<(usize, usize)>,
    /// Non-empty sentences with an earlier non-empty one, by first row: `(row, sentence)`.
    starts: Vec<(usize, usize)>,
    /// The sentence passed over as a source: the first holding token 0, when `skip_sink`.
    sink: Option<usize>,
}

/// An [`AttentionSink`] keeping each sentence's top-source token block per head (module doc).
#[derive(Debug)]
pub struct TokenPairCapture {
    bounds: Vec<(usize, usize)>,
    layers: usize,
    heads: usize,
    options: TokenPairOptions,
    layout: Option<Layout>,
    /// Layer whose heads are in `states`.
    current: Option<usize>,
    states: Vec<HeadState>,
    done: Vec<HeadTokenPairs>,
}

impl TokenPairCapture {
    /// A capture for sentences with token ranges `bounds` in a `layers × heads` model.
    pub fn new(bounds: Vec<(usize, usize)>, layers: usize, heads: usize, options: TokenPairOptions) -> Result<Self> {
        if options.max_tokens == 0 {
            return Err(Error::invalid("token pairs: max_tokens must be at least 1"));
        }
        if let Some(wanted) = &options.heads {
            if let Some(&(l, h)) = wanted.iter().find(|&&(l, h)| l >= layers || h >= heads) {
                return Err(Error::invalid(format!("token pairs: head {l}.{h} outside the model's {layers} layers × {heads} heads")));
            }
        }
        Ok(TokenPairCapture { bounds, layers, heads, options, layout: None, current: None, states: Vec::new(), done: Vec::new() })
    }

    fn wants(&self, layer: usize, head: usize) -> bool {
        self.options.heads.as_ref().is_none_or(|w| w.contains(&(layer, head)))
    }

    /// Finish the last layer and return the pairs (the caller fills `tokens`).
    pub fn finish(mut self) -> Result<TokenPairs> {
        self.end_layer()?;
        let ranges = match &self.layout {
            Some(layout) => layout.clipped.clone(),
            None => return Err(Error::invalid("token pairs: no attention received")),
        };
        let mut heads = self.done;
        heads.sort_by_key(|h| (h.layer, h.head));
        let n = ranges.len();
        Ok(TokenPairs { max_tokens: self.options.max_tokens, ranges, heads, tokens: vec![Vec::new(); n] })
    }

    fn layout_for(&mut self, total: usize) -> Result<()> {
        if let Some(layout) = &self.layout {
            if layout.total != total {
                return Err(Error::invalid(format!("token pairs: block has {total} keys, earlier blocks had {}", layout.total)));
            }
            return Ok(());
        }
        // The averager's clipping (upstream clips to T − 1).
        let last = total.saturating_sub(1);
        let clipped: Vec<(usize, usize)> = self.bounds.iter().map(|&(s, e)| (s.min(last), e.min(last))).collect();
        let mut starts = Vec::new();
        for (i, &(r0, r1)) in clipped.iter().enumerate() {
            if r0 < r1 && clipped[..i].iter().any(|&(c0, c1)| c0 < c1) {
                starts.push((r0, i));
            }
        }
        starts.sort_unstable();
        let sink = if self.options.skip_sink { clipped.iter().position(|&(r0, r1)| r0 == 0 && r1 > 0) } else { None };
        self.layout = Some(Layout { total, clipped, starts, sink });
        Ok(())
    }

    /// Checks and the change of layer; the states of `block.layer` after it.
    fn begin_block(&mut self, block: &AttentionBlock<'_>) -> Result<()> {
        if block.layer >= self.layers || block.heads != self.heads {
            return Err(Error::invalid(format!(
                "token pairs: block for layer {} with {} heads, expected layers < {} and {} heads",
                block.layer, block.heads, self.layers, self.heads
            )));
        }
        if block.kv_len > block.total_keys || block.q_start + block.rows > block.total_keys {
            return Err(Error::invalid(format!(
                "token pairs: block rows {}..{} × {} keys beyond the {} keys",
                block.q_start,
                block.q_start + block.rows,
                block.kv_len,
                block.total_keys
            )));
        }
        self.layout_for(block.total_keys)?;
        match self.current {
            Some(layer) if layer == block.layer => {}
            Some(layer) if block.layer < layer => {
                return Err(Error::invalid(format!("token pairs: layer {} arrived after layer {layer}", block.layer)));
            }
            _ => {
                self.end_layer()?;
                let n = self.bounds.len();
                self.states = (0..self.heads)
                    .map(|h| HeadState { captured: self.wants(block.layer, h), pairs: vec![None; n], ..HeadState::default() })
                    .collect();
                self.current = Some(block.layer);
            }
        }
        Ok(())
    }

    /// Move the current layer's pairs to the result. A sentence still open lost rows: an error,
    /// as the averager's.
    fn end_layer(&mut self) -> Result<()> {
        let Some(layer) = self.current.take() else { return Ok(()) };
        for (head, state) in std::mem::take(&mut self.states).into_iter().enumerate() {
            if !state.captured {
                continue;
            }
            if let Some(open) = state.open.first() {
                return Err(Error::invalid(format!(
                    "token pairs: layer {layer} head {head} ended inside sentence {} ({} of its rows seen)",
                    open.sentence, open.rows_seen
                )));
            }
            self.done.push(HeadTokenPairs { layer, head, pairs: state.pairs });
        }
        Ok(())
    }
}

/// Stream one head's rows `[rows, kv_len]` (query rows from `q_start`) into its state.
fn head_rows(state: &mut HeadState, layout: &Layout, max_tokens: usize, q_start: usize, kv_len: usize, probs: &[f32]) {
    if !state.captured {
        return;
    }
    for (r, row) in probs.chunks(kv_len.max(1)).enumerate() {
        let q = q_start + r;
        // Sentences starting at or before this row open now (a block may begin inside one only
        // if the previous block held its start; one never seen is skipped).
        while let Some(&(start, sentence)) = layout.starts.get(state.cursor) {
            if start > q {
                break;
            }
            state.cursor += 1;
            if start == q {
                let width = layout.clipped[sentence].1;
                state.open.push(Open { sentence, column_sums: vec![0.0; width], kept: Vec::new(), kept_rows: 0, rows_seen: 0 });
            }
        }
        let mut finished = Vec::new();
        for (k, open) in state.open.iter_mut().enumerate() {
            let (r0, r1) = layout.clipped[open.sentence];
            if q < r0 || q >= r1 {
                continue;
            }
            let width = open.column_sums.len();
            let cut = kv_len.min(width);
            crate::model::cpu::add_widened(&mut open.column_sums[..cut], &row[..cut]);
            if open.kept_rows < max_tokens {
                open.kept.extend_from_slice(&row[..cut]);
                open.kept.resize(open.kept.len() + (width - cut), 0.0);
                open.kept_rows += 1;
            }
            open.rows_seen += 1;
            if q + 1 == r1 {
                finished.push(k);
            }
        }
        for k in finished.into_iter().rev() {
            let open = state.open.swap_remove(k);
            state.pairs[open.sentence] = top_source_pair(&open, layout, max_tokens);
        }
    }
}

/// The pair of a finished sentence: its top earlier source and the kept block.
fn top_source_pair(open: &Open, layout: &Layout, max_tokens: usize) -> Option<TokenPair> {
    let i = open.sentence;
    let (r0, r1) = layout.clipped[i];
    let rows = (r1 - r0) as f64;
    let width = open.column_sums.len();
    let mut best: Option<(usize, f64)> = None;
    let others = layout.clipped[..i].iter().enumerate().any(|(j, &(c0, c1))| c0 < c1 && Some(j) != layout.sink);
    for (j, &(c0, c1)) in layout.clipped[..i].iter().enumerate() {
        if c0 >= c1 || (others && Some(j) == layout.sink) {
            continue;
        }
        let sum: f64 = open.column_sums[c0.min(width)..c1.min(width)].iter().sum();
        let mean = sum / (rows * (c1 - c0) as f64);
        // Compared as the stored matrix holds them (f32), the first of equals kept.
        if best.is_none_or(|(_, m)| (mean as f32) > (m as f32)) {
            best = Some((j, mean));
        }
    }
    let (source, mean) = best?;
    let (c0, c1) = layout.clipped[source];
    let cols = (c1 - c0).min(max_tokens);
    let mut values = Vec::with_capacity(open.kept_rows * cols);
    for r in 0..open.kept_rows {
        let row = &open.kept[r * width..(r + 1) * width];
        values.extend((c0..c0 + cols).map(|c| row.get(c).copied().unwrap_or(0.0)));
    }
    Some(TokenPair { source, mean, rows: open.kept_rows, cols, values })
}

impl AttentionSink for TokenPairCapture {
    fn wants_layer(&self, layer: usize) -> bool {
        self.options.heads.as_ref().is_none_or(|w| w.iter().any(|&(l, _)| l == layer))
    }

    fn consume(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<()> {
        block.check_len("token pairs")?;
        self.begin_block(&block)?;
        let layout = self.layout.as_ref().expect("set by begin_block");
        let max_tokens = self.options.max_tokens;
        let per_head = (block.rows * block.kv_len).max(1);
        self.states
            .par_iter_mut()
            .zip(block.probs.par_chunks(per_head))
            .for_each(|(state, probs)| head_rows(state, layout, max_tokens, block.q_start, block.kv_len, probs));
        Ok(())
    }

    fn per_head(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<Option<Vec<HeadConsumer<'_>>>> {
        self.begin_block(&block)?;
        let Self { states, layout, options, .. } = self;
        let layout: &Layout = layout.as_ref().expect("set by begin_block");
        let (max_tokens, q_start, kv_len) = (options.max_tokens, block.q_start, block.kv_len);
        Ok(Some(
            states
                .iter_mut()
                .map(|state| {
                    Box::new(move |probs: &[f32]| head_rows(state, layout, max_tokens, q_start, kv_len, probs)) as HeadConsumer<'_>
                })
                .collect(),
        ))
    }

    fn consume_on_device(
        &mut self,
        layer: usize,
        q_start: usize,
        total_keys: usize,
        probs: &candle_core::Tensor,
    ) -> crate::model::Result<bool> {
        // The kept rows are needed on the host: the block comes over (only when this view is asked for).
        let (heads, rows, kv_len) = probs.dims3()?;
        let host = probs.to_dtype(candle_core::DType::F32)?.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        self.consume(AttentionBlock { layer, q_start, heads, rows, kv_len, total_keys, probs: &host })?;
        Ok(true)
    }
}

/// The averager and the capture fed by one pass: each block goes to both.
struct BothSinks<'a> {
    averager: &'a mut SentenceAverager,
    capture: &'a mut TokenPairCapture,
}

impl AttentionSink for BothSinks<'_> {
    fn wants_layer(&self, layer: usize) -> bool {
        self.averager.wants_layer(layer) || self.capture.wants_layer(layer)
    }

    fn consume(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<()> {
        self.averager.consume(block)?;
        if self.capture.wants_layer(block.layer) {
            self.capture.consume(block)?;
        }
        Ok(())
    }

    fn per_head(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<Option<Vec<HeadConsumer<'_>>>> {
        let wanted = self.capture.wants_layer(block.layer);
        let Some(averaging) = self.averager.per_head(block)? else {
            // `consume` will get the whole block (and pass it to both).
            return Ok(None);
        };
        if !wanted {
            return Ok(Some(averaging));
        }
        let Some(capturing) = self.capture.per_head(block)? else { unreachable!("the capture always splits by head") };
        Ok(Some(
            averaging
                .into_iter()
                .zip(capturing)
                .map(|(mut average, mut capture)| {
                    Box::new(move |probs: &[f32]| {
                        average(probs);
                        capture(probs);
                    }) as HeadConsumer<'_>
                })
                .collect(),
        ))
    }

    fn consume_on_device(
        &mut self,
        layer: usize,
        q_start: usize,
        total_keys: usize,
        probs: &candle_core::Tensor,
    ) -> crate::model::Result<bool> {
        // Not handled by the averager: the decoder copies the block and calls `consume` (both get it there).
        if !self.averager.consume_on_device(layer, q_start, total_keys, probs)? {
            return Ok(false);
        }
        if self.capture.wants_layer(layer) {
            self.capture.consume_on_device(layer, q_start, total_keys, probs)?;
        }
        Ok(true)
    }
}

/// Bytes the capture may hold at the end: `heads × N` blocks of `max_tokens²` f32.
pub fn token_pairs_bytes(captured_heads: usize, n: usize, max_tokens: usize) -> u128 {
    captured_heads as u128 * n as u128 * (max_tokens * max_tokens) as u128 * 4
}

/// One forward pass over `sentences.text`: the `[L, H, N, N]` sentence averages (as
/// [`super::sentence_attention`]), the token boundaries, and the token pairs of `options`,
/// with each sentence's first `max_tokens` tokens decoded.
pub fn sentence_attention_with_token_pairs(
    loaded: &Loaded,
    sentences: &Sentences,
    boundary_mode: BoundaryMode,
    options: &TokenPairOptions,
) -> Result<(SentenceAttention, TokenBounds, TokenPairs)> {
    let ids = encode_within_context(loaded, &sentences.text)?;
    let (layers, heads) = (loaded.model.num_layers(), loaded.model.num_heads());
    let captured = options.heads.as_ref().map_or(layers * heads, Vec::len);
    if loaded.settings.memory_check {
        check_bytes_fit(
            layers as u128 * heads as u128 * (sentences.len() as u128).pow(2) * 4
                + token_pairs_bytes(captured, sentences.len(), options.max_tokens),
            &format!("the sentence attention and token pairs of {} sentences ({layers} layers × {heads} heads)", sentences.len()),
        )?;
    }
    let bounds = TokenBounds::of_ids(&loaded.tokenizer, sentences, boundary_mode, &ids)?;
    // The result and the block sums are allocated now, fallibly: before the forward pass.
    let mut averager = SentenceAverager::try_new(bounds.ranges.clone(), layers, heads)?.expect_tokens(ids.len());
    let mut capture = TokenPairCapture::new(bounds.ranges.clone(), layers, heads, options.clone())?;
    {
        let bar = progress_detail(layers as u64, &format!("attention and token pairs, {} tokens", ids.len()));
        let mut both = BothSinks { averager: &mut averager, capture: &mut capture };
        let mut sink = LayerProgress::new(&mut both, bar.clone());
        let mut hooks = HookSet::new().with_sink(&mut sink);
        loaded.model.forward_with(Input::Ids(&ids), &mut KvCache::discarding(&loaded.model), &mut hooks, Logits::None)?;
        bar.inc(1);
        bar.finish();
    }
    let attention = averager.finish()?;
    let mut pairs = capture.finish()?;
    pairs.tokens = pairs
        .ranges
        .iter()
        .map(|&(start, end)| {
            ids[start..end.min(start + options.max_tokens)]
                .iter()
                .map(|&id| loaded.tokenizer.decode(&[id], false).map_err(Error::from))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    Ok((attention, bounds, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random causal attention `[heads, T, T]` (rows sum to 1 over keys ≤ the query).
    fn causal(heads: usize, t: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) as f32
        };
        let mut probs = vec![0f32; heads * t * t];
        for h in 0..heads {
            for q in 0..t {
                let row = &mut probs[(h * t + q) * t..(h * t + q + 1) * t];
                for v in row[..=q].iter_mut() {
                    *v = next().powi(3) + 1e-3;
                }
                let sum: f32 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
        probs
    }

    /// Feed `probs` in query blocks of `block_rows` to both sinks, per head or whole.
    fn run(
        bounds: &[(usize, usize)],
        probs: &[f32],
        layers: usize,
        heads: usize,
        t: usize,
        block_rows: usize,
        per_head: bool,
        options: TokenPairOptions,
    ) -> (SentenceAttention, TokenPairs) {
        let mut averager = SentenceAverager::new(bounds.to_vec(), layers, heads);
        let mut capture = TokenPairCapture::new(bounds.to_vec(), layers, heads, options).unwrap();
        {
            let mut both = BothSinks { averager: &mut averager, capture: &mut capture };
            for layer in 0..layers {
                let mut q0 = 0;
                while q0 < t {
                    let rows = block_rows.min(t - q0);
                    let kv_len = q0 + rows;
                    let mut block = Vec::with_capacity(heads * rows * kv_len);
                    for h in 0..heads {
                        for q in q0..q0 + rows {
                            let start = (h * t + q) * t;
                            block.extend_from_slice(&probs[start..start + kv_len]);
                        }
                    }
                    let b = AttentionBlock { layer, q_start: q0, heads, rows, kv_len, total_keys: t, probs: &block };
                    if per_head {
                        let consumers = both.per_head(AttentionBlock { probs: &[], ..b }).unwrap().unwrap();
                        for (mut consume, chunk) in consumers.into_iter().zip(block.chunks(rows * kv_len)) {
                            consume(chunk);
                        }
                    } else {
                        both.consume(b).unwrap();
                    }
                    q0 += rows;
                }
            }
        }
        (averager.finish().unwrap(), capture.finish().unwrap())
    }

    #[test]
    fn pairs_are_each_sentences_top_source_with_the_matrix_cell_as_mean() {
        let (heads, t) = (3, 40);
        let probs = causal(heads, t, 11);
        // Sentences of 1 to 9 tokens, one empty, BOS outside; the last reaches T (clipped).
        let bounds = vec![(1, 5), (5, 6), (6, 14), (14, 14), (14, 23), (23, 31), (31, 40)];
        for (block_rows, per_head) in [(40, false), (7, true), (3, false), (1, true)] {
            let (attention, pairs) =
                run(&bounds, &probs, 1, heads, t, block_rows, per_head, TokenPairOptions { max_tokens: 4, ..TokenPairOptions::default() });
            assert_eq!(pairs.heads.len(), heads);
            assert_eq!(pairs.ranges[6], (31, 39), "clipped to T − 1 as the averages");
            let n = bounds.len();
            for h in 0..heads {
                let m = attention.matrix(0, h);
                let head = pairs.head(0, h).unwrap();
                assert!(head.pairs[0].is_none() && head.pairs[3].is_none(), "no earlier sentence / no tokens");
                for i in [1, 2, 4, 5, 6] {
                    let pair = head.pairs[i].as_ref().unwrap();
                    let row: Vec<f32> = (0..i).map(|j| m[i * n + j]).collect();
                    let best = (0..i).filter(|&j| j != 3).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                    assert_eq!(pair.source, best, "blocks of {block_rows}, head {h}, sentence {i}");
                    assert!(
                        (pair.mean as f32 - m[i * n + best]).abs() <= 1e-6 * m[i * n + best].abs(),
                        "{} vs {}",
                        pair.mean,
                        m[i * n + best]
                    );
                    let (r0, r1) = pairs.ranges[i];
                    let (c0, c1) = pairs.ranges[best];
                    assert_eq!((pair.rows, pair.cols), ((r1 - r0).min(4), (c1 - c0).min(4)));
                    for r in 0..pair.rows {
                        for c in 0..pair.cols {
                            assert_eq!(
                                pair.values[r * pair.cols + c],
                                probs[(h * t + r0 + r) * t + c0 + c],
                                "the probabilities themselves"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_sentence_holding_token_0_is_a_source_only_when_there_is_no_other() {
        let (heads, t) = (2, 20);
        let mut probs = causal(heads, t, 5);
        // Every query puts most of its attention on token 0, the sink.
        for row in probs.chunks_mut(t) {
            row[0] += 5.0;
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
        let bounds = vec![(0, 4), (4, 9), (9, 15), (15, 20)];
        let (attention, pairs) =
            run(&bounds, &probs, 1, heads, t, 6, true, TokenPairOptions { max_tokens: 3, ..TokenPairOptions::default() });
        for h in 0..heads {
            let head = pairs.head(0, h).unwrap();
            let m = attention.matrix(0, h);
            assert!(m[3 * 4] > m[3 * 4 + 1] && m[3 * 4] > m[3 * 4 + 2], "sentence 0 is the matrix's top source");
            assert_eq!(head.pairs[1].as_ref().unwrap().source, 0, "the only earlier sentence");
            let third = head.pairs[3].as_ref().unwrap();
            assert_eq!(third.source, if m[3 * 4 + 1] >= m[3 * 4 + 2] { 1 } else { 2 }, "the top of the others");
        }
        let (_, pairs) = run(&bounds, &probs, 1, heads, t, 6, false, TokenPairOptions { max_tokens: 3, heads: None, skip_sink: false });
        assert!(pairs.heads.iter().all(|h| h.pairs[1..].iter().all(|p| p.as_ref().unwrap().source == 0)));
    }

    #[test]
    fn cut_pairs_are_what_a_capture_keeping_fewer_tokens_keeps() {
        let (heads, t) = (2, 30);
        let probs = causal(heads, t, 9);
        let bounds = vec![(1, 6), (6, 13), (13, 20), (20, 30)];
        let capture = |max_tokens| run(&bounds, &probs, 1, heads, t, 7, true, TokenPairOptions { max_tokens, ..TokenPairOptions::default() }).1;
        let wide = capture(6);
        assert_eq!(wide.truncated(3), capture(3), "same sources and means, the blocks' first 3 × 3");
        assert_eq!(wide.truncated(9), wide, "more tokens than kept: unchanged");
        assert!(wide.value_count() > capture(3).value_count());
        let one = wide.select(&[(0, 1), (0, 7)]);
        assert_eq!(one.heads, [wide.heads[1].clone()], "the heads captured, in the order asked");
    }

    #[test]
    fn only_the_heads_asked_for_are_kept_and_bad_input_is_an_error() {
        let (heads, t) = (2, 12);
        let probs = causal(heads, t, 3);
        let bounds = vec![(1, 4), (4, 8), (8, 12)];
        let (_, pairs) =
            run(&bounds, &probs, 1, heads, t, 5, true, TokenPairOptions { max_tokens: 2, heads: Some(vec![(0, 1)]), skip_sink: true });
        assert_eq!(pairs.heads.iter().map(|h| (h.layer, h.head)).collect::<Vec<_>>(), [(0, 1)]);
        assert!(TokenPairCapture::new(
            bounds.clone(),
            1,
            heads,
            TokenPairOptions { max_tokens: 2, heads: Some(vec![(1, 0)]), skip_sink: true }
        )
        .is_err());
        assert!(TokenPairCapture::new(bounds.clone(), 1, heads, TokenPairOptions { max_tokens: 0, ..TokenPairOptions::default() }).is_err());
        // A layer that stops inside a sentence is an error, not a silently shorter block.
        let mut capture = TokenPairCapture::new(bounds, 1, heads, TokenPairOptions::default()).unwrap();
        let block: Vec<f32> = vec![0.1; heads * 6 * 6];
        capture.consume(AttentionBlock { layer: 0, q_start: 0, heads, rows: 6, kv_len: 6, total_keys: t, probs: &block }).unwrap();
        assert!(capture.finish().unwrap_err().to_string().contains("inside sentence"));
    }
}
