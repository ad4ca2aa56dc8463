//! The forward bench's per-phase timers (`model::cpu::phases`) on SmolLM2 over a short text: the
//! work each phase records is the work the forward does, and the phases' times fit inside the
//! wall time and cover most of it. The model times its phases because its settings say so
//! (`Kernels::phase_timing`); the sums are process-wide: the test holds `serial` throughout.

use crate::support;

use std::time::Instant;

use thoughtscope::attention::{sentence_attention, BoundaryMode, Sentences};
use thoughtscope::model::cpu::{phases, sgemm};
use thoughtscope::model::Kernels;

#[test]
fn phases_account_for_the_forward_and_sum_to_about_its_wall_time() {
    let _turn = crate::serial();
    let Some(mut loaded) = support::smollm2() else { return };
    loaded.model.set_kernels(Kernels { phase_timing: true, ..loaded.model.kernels() });
    let sentence = "The train leaves at nine and covers three hundred kilometres at a steady pace. ";
    let text = format!("Let me work out when it arrives. {}So it arrives after three hours.", sentence.repeat(12));
    let sentences = Sentences::from_full_cot(&text).unwrap();
    // Warm-up (page faults, thread pool) outside the timed run.
    sentence_attention(&loaded, &sentences, BoundaryMode::Prefix).unwrap();

    phases::reset();
    let start = Instant::now();
    let (_, bounds) = sentence_attention(&loaded, &sentences, BoundaryMode::Prefix).unwrap();
    let wall = start.elapsed().as_secs_f64();
    let p = phases::snapshot();
    let t = bounds.n_tokens;
    assert!(t >= 100, "the text should be a few hundred tokens, got {t}");

    // Work: exactly what the decoder computes.
    let cfg = loaded.model.config();
    let (d, hd, h, inter) = (cfg.hidden_size, cfg.head_dim(), cfg.num_attention_heads, cfg.intermediate_size);
    let per_token = d * h * hd * 2 + d * cfg.num_kv_heads() * hd * 2 + 3 * d * inter;
    let layers = cfg.num_hidden_layers;
    assert_eq!(p.linear.work, (2 * layers * per_token * t) as f64, "linear work");
    if sgemm::available() {
        // One block of all rows per layer here: scores over the whole T × T rectangle.
        assert_eq!(p.scores.work, (2 * layers * h * t * t * hd) as f64, "Q·Kᵀ work");
        assert_eq!(p.values.work, p.scores.work, "P·V work");
        assert_eq!(p.softmax.work, (layers * h * t * (t + 1) / 2) as f64, "probabilities computed");
        assert_eq!(p.sink.work, (4 * layers * h * t * t) as f64, "bytes handed to the sink");
    } else {
        support::skip_hardware("the attention phases run on sgemm's kernels only");
    }

    // Time: the phases are disjoint parts of the forward, so they sum to less than its wall
    // time, and they are most of it (the rest: norms, RoPE, SiLU, the head layout, tokenising
    // the boundaries).
    let total = p.total_s();
    eprintln!("wall {wall:.3} s, phases {total:.3} s: {p:?}");
    assert!(total <= wall * 1.02, "phases {total:.3} s exceed the wall time {wall:.3} s");
    assert!(total >= wall * 0.4, "phases {total:.3} s cover too little of the wall time {wall:.3} s");
    let gemm = p.gemm_s();
    assert!(gemm > 0.0 && gemm <= total, "GEMM phases {gemm:.3} s outside (0, {total:.3}]");
    for (name, phase) in [("linear", p.linear), ("values", p.values), ("sink", p.sink)] {
        assert!(phase.seconds > 0.0 && phase.rate > 0.0, "{name}: {phase:?}");
    }
}
