//! Sentence averaging of attention (upstream `_compute_averaged_matrix`): `M[i,j]` = mean of the attention block with the query
//! rows of sentence i and the key columns of sentence j, for every layer and head.
//!
//! Upstream `_compute_averaged_matrix` semantics, reproduced exactly:
//! - token ranges are clipped to `T − 1` (so the last token of the input is never in a block);
//! - a sentence whose clipped range is empty gives a row (or column) of `0.0`, not NaN;
//! - block means include the causal zeros of the diagonal block and the softmax mass that goes
//!   to BOS and the prompt: no renormalisation.
//!
//! Deliberate difference: instead of an N² loop of block means per head over a
//! stored `T × T` matrix, [`SentenceAverager`] is an [`AttentionSink`] that reduces each query
//! block as the model produces it and keeps only one layer's `H × N × N` block sums, one
//! length-T column accumulator per head, and the `L × H × N × N` result. Rows are reduced first:
//! consecutive query rows of the same sentence(s) are added into per-key column sums (f64, one
//! pass over the attention, vectorised), and when the run of rows ends the column sums are cut
//! into the sentences' key ranges. numpy sums f32 pairwise; the f64 accumulation agrees with it
//! to ~1e-7 relative (golden G2).

use rayon::prelude::*;

use super::{AttentionBlock, AttentionSink, HeadConsumer};
use crate::{Error, Result};

/// Sentence-averaged attention of every head, `[layers, heads, n, n]` row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceAttention {
    layers: usize,
    heads: usize,
    n: usize,
    data: Vec<f32>,
}

impl SentenceAttention {
    /// Wrap `data` (`layers · heads · n · n` values, row-major).
    pub fn new(layers: usize, heads: usize, n: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != layers * heads * n * n {
            return Err(Error::invalid(format!(
                "sentence attention: {} values for [{layers}, {heads}, {n}, {n}] (expected {})",
                data.len(),
                layers * heads * n * n
            )));
        }
        Ok(SentenceAttention { layers, heads, n, data })
    }

    pub fn zeros(layers: usize, heads: usize, n: usize) -> Self {
        SentenceAttention { layers, heads, n, data: vec![0.0; layers * heads * n * n] }
    }

    /// [`SentenceAttention::zeros`] allocated fallibly: memory that cannot be had (a low `ulimit
    /// -v`, a full machine) is an error with the size, not an abort.
    pub fn try_zeros(layers: usize, heads: usize, n: usize) -> Result<Self> {
        let len = checked_grid(layers, heads, n)?;
        let what = format!("the sentence attention ({layers} layers × {heads} heads × {n} × {n} float32)");
        Ok(SentenceAttention { layers, heads, n, data: crate::model::memory::try_vec(len, 0.0, &what)? })
    }

    pub fn layers(&self) -> usize {
        self.layers
    }
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// Number of sentences N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The N×N matrix of one head, row-major (`m[i * n + j]` = attention from sentence i to j).
    /// Panics if `layer` or `head` is out of range.
    pub fn matrix(&self, layer: usize, head: usize) -> &[f32] {
        assert!(layer < self.layers && head < self.heads, "head ({layer}, {head}) outside [{}, {}]", self.layers, self.heads);
        let size = self.n * self.n;
        let start = (layer * self.heads + head) * size;
        &self.data[start..start + size]
    }

    pub fn matrix_mut(&mut self, layer: usize, head: usize) -> &mut [f32] {
        assert!(layer < self.layers && head < self.heads, "head ({layer}, {head}) outside [{}, {}]", self.layers, self.heads);
        let size = self.n * self.n;
        let start = (layer * self.heads + head) * size;
        &mut self.data[start..start + size]
    }

    /// All values, `[layers, heads, n, n]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// `layers · heads · n · n`, or an error when it overflows.
fn checked_grid(layers: usize, heads: usize, n: usize) -> Result<usize> {
    layers.checked_mul(heads).and_then(|v| v.checked_mul(n)).and_then(|v| v.checked_mul(n)).ok_or_else(|| {
        Error::invalid(format!("sentence attention of {layers} layers × {heads} heads × {n} × {n} values: more than can be counted"))
    })
}

/// Streams attention blocks into sentence averages (see the module doc).
///
/// Blocks must come layer by layer, and within a layer by increasing, contiguous `q_start`
/// (the order [`AttentionSink`] promises). Every query row inside some sentence must be seen,
/// otherwise [`SentenceAverager::finish`] fails rather than return a wrong mean.
#[derive(Debug)]
pub struct SentenceAverager {
    bounds: Vec<(usize, usize)>,
    layers: usize,
    heads: usize,
    expected_tokens: Option<usize>,
    /// Set by the first block: T, clipped ranges, which sentences each row belongs to.
    geometry: Option<Geometry>,
    current: Option<LayerProgress>,
    /// Per head `[N × N]` f64 block sums of the current layer.
    sums: Vec<f64>,
    /// Per head: the run of query rows being reduced into column sums.
    runs: Vec<RowRun>,
    done: Vec<bool>,
    out: SentenceAttention,
    /// Blocks reduced on their GPU (`consume_on_device`): the current layer's `[H, N, N]` f32
    /// block sums there, added into `sums` when the layer ends.
    device_sums: Option<candle_core::Tensor>,
    /// `[T, N]` 0/1 membership of key columns in the clipped sentence ranges, on that device.
    device_columns: Option<candle_core::Tensor>,
}

#[derive(Debug)]
struct Geometry {
    total: usize,
    clipped: Vec<(usize, usize)>,
    /// Sentences of row q: `members[member_start[q]..member_start[q + 1]]`.
    member_start: Vec<usize>,
    members: Vec<usize>,
    /// Rows that must be seen: `[first, last)` over all non-empty clipped ranges.
    needed_rows: Option<(usize, usize)>,
}

/// Consecutive query rows that belong to the same sentences, summed per key column.
#[derive(Debug, Default)]
struct RowRun {
    /// First row of the run (its sentences are the run's), None when no run is open.
    first_row: Option<usize>,
    /// `column_sums[k]` = Σ over the run's rows of `A[q, k]`.
    column_sums: Vec<f64>,
    /// Columns `>= touched` are still zero.
    touched: usize,
}

impl RowRun {
    /// Add the run's column sums into the block sums of its sentences and reset it.
    fn flush(&mut self, geometry: &Geometry, head_sums: &mut [f64]) {
        let Some(q0) = self.first_row.take() else { return };
        let n = geometry.clipped.len();
        let members = geometry.members_of(q0);
        let touched = self.touched;
        for (j, &(c0, c1)) in geometry.clipped.iter().enumerate() {
            let (c0, c1) = (c0.min(touched), c1.min(touched));
            if c0 >= c1 {
                continue;
            }
            let block: f64 = self.column_sums[c0..c1].iter().sum();
            for &i in members {
                head_sums[i * n + j] += block;
            }
        }
        self.column_sums[..touched].iter_mut().for_each(|v| *v = 0.0);
        self.touched = 0;
    }
}

impl Geometry {
    fn members_of(&self, q: usize) -> &[usize] {
        &self.members[self.member_start[q]..self.member_start[q + 1]]
    }
}

#[derive(Debug, Clone, Copy)]
struct LayerProgress {
    layer: usize,
    first_row: usize,
    next_row: usize,
}

impl SentenceAverager {
    /// An averager for sentences with token ranges `bounds` (from [`super::TokenBounds`]),
    /// for a model with `layers × heads` attention heads. Its large buffers (the result and one
    /// layer's block sums) are allocated with the first block; [`SentenceAverager::try_new`]
    /// allocates them at once.
    pub fn new(bounds: Vec<(usize, usize)>, layers: usize, heads: usize) -> Self {
        SentenceAverager {
            bounds,
            layers,
            heads,
            expected_tokens: None,
            geometry: None,
            current: None,
            sums: Vec::new(),
            runs: Vec::new(),
            done: vec![false; layers],
            out: SentenceAttention { layers, heads, n: 0, data: Vec::new() },
            device_sums: None,
            device_columns: None,
        }
    }

    /// [`SentenceAverager::new`] with the `layers × heads × N × N` result and the `heads × N × N`
    /// float64 block sums allocated now, fallibly: call it before the forward pass, so memory that
    /// cannot be had is an error naming the buffer and its size before any work, never an abort.
    pub fn try_new(bounds: Vec<(usize, usize)>, layers: usize, heads: usize) -> Result<Self> {
        let mut averager = Self::new(bounds, layers, heads);
        averager.allocate()?;
        Ok(averager)
    }

    /// Allocate the result and the block sums (fallibly) unless done already.
    fn allocate(&mut self) -> Result<()> {
        let n = self.n();
        if self.out.n != n || self.out.data.len() != checked_grid(self.layers, self.heads, n)? {
            self.out = SentenceAttention::try_zeros(self.layers, self.heads, n)?;
        }
        let sums = checked_grid(1, self.heads, n)?;
        if self.sums.capacity() < sums {
            let what = format!("the attention block sums of one layer ({} heads × {n} × {n} float64)", self.heads);
            self.sums = crate::model::memory::try_with_capacity(sums, &what)?;
        }
        Ok(())
    }

    /// Fail on the first block whose sequence length differs from `tokens` (T of the
    /// tokenisation the bounds came from), instead of averaging the wrong positions.
    pub fn expect_tokens(mut self, tokens: usize) -> Self {
        self.expected_tokens = Some(tokens);
        self
    }

    /// Finish the last layer and return the `[L, H, N, N]` averages.
    pub fn finish(mut self) -> Result<SentenceAttention> {
        self.allocate()?;
        if let Some(progress) = self.current.take() {
            self.finalize_layer(progress)?;
        }
        if let Some(missing) = self.done.iter().position(|d| !d) {
            return Err(Error::invalid(format!(
                "sentence averager: no attention received for layer {missing} of {}",
                self.layers
            )));
        }
        Ok(self.out)
    }

    fn n(&self) -> usize {
        self.bounds.len()
    }

    fn geometry_for(&mut self, total: usize) -> Result<()> {
        if let Some(g) = &self.geometry {
            if g.total != total {
                return Err(Error::invalid(format!(
                    "sentence averager: block has {total} keys, earlier blocks had {}",
                    g.total
                )));
            }
            return Ok(());
        }
        if let Some(expected) = self.expected_tokens {
            if expected != total {
                return Err(Error::invalid(format!(
                    "sentence averager: the model input has {total} tokens but the boundaries were computed for {expected}"
                )));
            }
        }
        // Upstream clips to T − 1, not T.
        let last = total.saturating_sub(1);
        let clipped: Vec<(usize, usize)> = self.bounds.iter().map(|&(s, e)| (s.min(last), e.min(last))).collect();
        // Sentences of each row, in sentence order: count per row, prefix-sum, fill.
        let mut member_start = vec![0usize; total + 1];
        for &(r0, r1) in &clipped {
            for q in r0..r1 {
                member_start[q + 1] += 1;
            }
        }
        for q in 0..total {
            member_start[q + 1] += member_start[q];
        }
        let mut members = vec![0usize; member_start[total]];
        let mut filled = member_start.clone();
        for (i, &(r0, r1)) in clipped.iter().enumerate() {
            for q in r0..r1 {
                members[filled[q]] = i;
                filled[q] += 1;
            }
        }
        let nonempty = clipped.iter().filter(|(r0, r1)| r0 < r1);
        let needed_rows = nonempty.clone().map(|r| r.0).min().zip(nonempty.map(|r| r.1).max());
        self.geometry = Some(Geometry { total, clipped, member_start, members, needed_rows });
        Ok(())
    }

    fn finalize_layer(&mut self, progress: LayerProgress) -> Result<()> {
        if let Some(device_sums) = self.device_sums.take() {
            let host = device_sums.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_vec1::<f32>()?;
            for (sum, value) in self.sums.iter_mut().zip(host) {
                *sum += f64::from(value);
            }
        }
        let g = self.geometry.as_ref().expect("geometry set by the first block");
        let n = self.n();
        if n > 0 {
            for (run, head_sums) in self.runs.iter_mut().zip(self.sums.chunks_mut(n * n)) {
                run.flush(g, head_sums);
            }
        }
        if let Some((first, last)) = g.needed_rows {
            if progress.first_row > first || progress.next_row < last {
                return Err(Error::invalid(format!(
                    "sentence averager: layer {} covered query rows {}..{} but sentences need rows {first}..{last}",
                    progress.layer, progress.first_row, progress.next_row
                )));
            }
        }
        let sums = &self.sums;
        let clipped = &g.clipped;
        for h in 0..self.heads {
            let head_sums = &sums[h * n * n..(h + 1) * n * n];
            let m = self.out.matrix_mut(progress.layer, h);
            for i in 0..n {
                let (r0, r1) = clipped[i];
                if r0 >= r1 {
                    continue;
                }
                for j in 0..n {
                    let (c0, c1) = clipped[j];
                    if c0 >= c1 {
                        continue;
                    }
                    let count = ((r1 - r0) * (c1 - c0)) as f64;
                    m[i * n + j] = (head_sums[i * n + j] / count) as f32;
                }
            }
        }
        self.done[progress.layer] = true;
        Ok(())
    }
}

impl SentenceAverager {
    /// Checks and layer bookkeeping shared by host and device blocks; `values` is the block's
    /// element count.
    fn begin_block(&mut self, block: AttentionBlock<'_>, values: usize) -> Result<()> {
        if block.layer >= self.layers || block.heads != self.heads {
            return Err(Error::invalid(format!(
                "sentence averager: block for layer {} with {} heads, expected layers < {} and {} heads",
                block.layer, block.heads, self.layers, self.heads
            )));
        }
        if block.kv_len > block.total_keys || values != block.heads * block.rows * block.kv_len {
            return Err(Error::invalid(format!(
                "sentence averager: block of {} values for {} heads × {} rows × {} keys (of {})",
                values,
                block.heads,
                block.rows,
                block.kv_len,
                block.total_keys
            )));
        }
        if block.q_start + block.rows > block.total_keys {
            return Err(Error::invalid(format!(
                "sentence averager: query rows {}..{} beyond the {} keys",
                block.q_start,
                block.q_start + block.rows,
                block.total_keys
            )));
        }
        self.geometry_for(block.total_keys)?;
        self.allocate()?;

        match self.current {
            Some(p) if p.layer == block.layer => {
                if block.q_start != p.next_row {
                    return Err(Error::invalid(format!(
                        "sentence averager: layer {} block starts at row {}, expected {}",
                        block.layer, block.q_start, p.next_row
                    )));
                }
            }
            previous => {
                if let Some(p) = previous {
                    if block.layer < p.layer {
                        return Err(Error::invalid(format!(
                            "sentence averager: layer {} arrived after layer {}",
                            block.layer, p.layer
                        )));
                    }
                    self.finalize_layer(p)?;
                }
                if self.done[block.layer] {
                    return Err(Error::invalid(format!("sentence averager: layer {} received twice", block.layer)));
                }
                let n = self.n();
                self.sums.clear();
                self.sums.resize(self.heads * n * n, 0.0);
                self.device_sums = None;
                self.current = Some(LayerProgress { layer: block.layer, first_row: block.q_start, next_row: block.q_start });
            }
        }
        if let Some(p) = self.current.as_mut() {
            p.next_row = block.q_start + block.rows;
        }

        Ok(())
    }

    /// `[T, N]` column membership on `device`, made once per averager.
    fn device_columns(&mut self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        if let Some(columns) = self.device_columns.as_ref().filter(|c| c.device().same_device(device)) {
            return Ok(columns.clone());
        }
        let g = self.geometry.as_ref().expect("geometry set by begin_block");
        let n = g.clipped.len();
        let mut columns = vec![0f32; g.total * n];
        for (j, &(c0, c1)) in g.clipped.iter().enumerate() {
            for c in c0..c1 {
                columns[c * n + j] = 1.0;
            }
        }
        let columns = candle_core::Tensor::from_vec(columns, (g.total, n), device)?;
        self.device_columns = Some(columns.clone());
        Ok(columns)
    }
}

impl AttentionSink for SentenceAverager {
    fn consume(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<()> {
        block.check_len("sentence averager")?;
        let Some(mut heads) = self.per_head(AttentionBlock { probs: &[], ..block })? else {
            unreachable!("the averager always splits by head")
        };
        heads.par_iter_mut().zip(block.probs.par_chunks(block.rows * block.kv_len.max(1))).for_each(|(head, probs)| head(probs));
        Ok(())
    }

    fn per_head(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<Option<Vec<HeadConsumer<'_>>>> {
        self.begin_block(block, block.heads * block.rows * block.kv_len)?;
        let n = self.n();
        if n == 0 {
            return Ok(Some((0..block.heads).map(|_| Box::new(|_: &[f32]| {}) as HeadConsumer<'_>).collect()));
        }
        let total = self.geometry.as_ref().expect("geometry set above").total;
        if self.runs.len() != self.heads {
            self.runs = (0..self.heads).map(|_| RowRun { column_sums: vec![0.0; total], ..RowRun::default() }).collect();
        }
        let Self { sums, runs, geometry, .. } = self;
        let g: &Geometry = geometry.as_ref().expect("geometry set above");
        let (q_start, rows, kv_len) = (block.q_start, block.rows, block.kv_len);
        let heads = sums
            .chunks_mut(n * n)
            .zip(runs.iter_mut())
            .map(|(head_sums, run)| {
                Box::new(move |probs: &[f32]| {
                    for (r, row) in probs.chunks(kv_len.max(1)).take(rows).enumerate() {
                        let q = q_start + r;
                        let members = g.members_of(q);
                        if run.first_row.is_some_and(|q0| g.members_of(q0) != members) {
                            run.flush(g, head_sums);
                        }
                        if members.is_empty() {
                            continue;
                        }
                        run.first_row.get_or_insert(q);
                        // Columns at or beyond `kv_len` are zero by the block's contract.
                        crate::model::cpu::add_widened(&mut run.column_sums[..kv_len], row);
                        run.touched = run.touched.max(kv_len);
                    }
                }) as HeadConsumer<'_>
            })
            .collect();
        Ok(Some(heads))
    }

    /// The block reduced where it lives: `R · P · C` per head, with `R` `[N, rows]` the rows'
    /// sentence membership and `C` `[kv_len, N]` the columns', two small products on the device;
    /// only the layer's `[H, N, N]` sums come back (when the layer ends). f32 sums there instead of
    /// the host path's f64: the two agree to ~1e-6 relative.
    fn consume_on_device(
        &mut self,
        layer: usize,
        q_start: usize,
        total_keys: usize,
        probs: &candle_core::Tensor,
    ) -> crate::model::Result<bool> {
        let (heads, rows, kv_len) = probs.dims3()?;
        let block = AttentionBlock { layer, q_start, heads, rows, kv_len, total_keys, probs: &[] };
        self.begin_block(block, probs.elem_count())?;
        let n = self.n();
        if n == 0 {
            return Ok(true);
        }
        let device = probs.device().clone();
        let columns = self.device_columns(&device)?.narrow(0, 0, kv_len)?;
        let g = self.geometry.as_ref().expect("geometry set by begin_block");
        let mut row_members = vec![0f32; n * rows];
        for r in 0..rows {
            for &i in g.members_of(q_start + r) {
                row_members[i * rows + r] = 1.0;
            }
        }
        let row_members = candle_core::Tensor::from_vec(row_members, (1, n, rows), &device)?;
        let per_row = probs.to_dtype(candle_core::DType::F32)?.contiguous()?.broadcast_matmul(&columns)?;
        let sums = row_members.broadcast_matmul(&per_row)?;
        self.device_sums = Some(match self.device_sums.take() {
            Some(acc) => (acc + sums)?,
            None => sums,
        });
        Ok(true)
    }
}

/// Upstream `_compute_averaged_matrix(A, bounds)` for one `t × t` row-major matrix: the N×N
/// block means with the clipping and empty-block rules of the module doc.
pub fn average_matrix(matrix: &[f32], t: usize, bounds: &[(usize, usize)]) -> Result<Vec<f32>> {
    if matrix.len() != t * t {
        return Err(Error::invalid(format!("average_matrix: {} values for a {t}×{t} matrix", matrix.len())));
    }
    let mut averager = SentenceAverager::new(bounds.to_vec(), 1, 1);
    if t > 0 {
        averager.consume(AttentionBlock { layer: 0, q_start: 0, heads: 1, rows: t, kv_len: t, total_keys: t, probs: matrix })?;
    } else {
        averager.done[0] = true;
    }
    Ok(averager.finish()?.into_data())
}
