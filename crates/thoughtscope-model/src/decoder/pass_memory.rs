//! What a forward pass will allocate through candle (where a failed allocation aborts the
//! process): checked before the pass so that memory that cannot be had is an error line.

use super::{Logits, Model};
use crate::Result;

impl Model {
    /// Bytes of the float32 key/value cache of `rows` sequences of `positions` positions.
    pub fn kv_cache_bytes(&self, rows: usize, positions: usize) -> u64 {
        let c = &self.config;
        [2, c.num_hidden_layers, c.num_kv_heads(), c.head_dim(), rows, positions, 4].iter().fold(1u64, |b, &d| b.saturating_mul(d as u64))
    }

    /// The largest buffers of a pass, which candle allocates (a failed allocation there aborts
    /// the process): the key/value cache it leaves (`keep`) and the logits. Checked before the
    /// pass ([`crate::memory::check_allocatable`]), so memory that cannot be had is an error
    /// naming them and their size.
    pub(super) fn check_pass_fits(&self, batch: usize, offset: usize, seq: usize, keep: bool, logits: Logits) -> Result<()> {
        let kv = if keep { self.kv_cache_bytes(batch, offset + seq) } else { 0 };
        let logit_rows = match logits {
            Logits::All => batch * seq,
            Logits::Last => batch,
            Logits::None => 0,
        };
        let logit_bytes = (logit_rows as u64).saturating_mul(self.config.vocab_size as u64).saturating_mul(4);
        if kv.saturating_add(logit_bytes) < crate::memory::LARGE_BUFFER {
            return Ok(());
        }
        let what = format!(
            "a forward pass over {batch} × {seq} positions after {offset} (key/value cache {kv} bytes, logits of {logit_rows} positions {logit_bytes} bytes)"
        );
        crate::memory::check_allocatable(kv.saturating_add(logit_bytes), &what)
    }
}
