//! TransformerLens' meaning of the q/k hook points: `hook_q`/`hook_k` hold q and k before RoPE,
//! `hook_rot_q`/`hook_rot_k` after it. RoPE at position 0 is the identity (cos 1, sin 0), so the
//! two agree there and differ at later positions; and the rotation keeps each pair's norm.

use crate::support;

use candle_core::IndexOp;
use thoughtscope::model::{HookPoint, HookSet, Input, KvCache, Model};
use thoughtscope::model::Settings;

#[test]
fn q_and_k_hooks_are_before_rope_and_rot_hooks_after() {
    let dir = support::fixture("tiny-llama3/config.json").parent().unwrap().to_path_buf();
    let model = Model::load_without_tokenizer(dir.to_str().unwrap(), &Settings::default()).unwrap();
    let layer = 1;
    let mut hooks = HookSet::new()
        .capture(HookPoint::AttnQ(layer))
        .capture(HookPoint::AttnRotQ(layer))
        .capture(HookPoint::AttnK(layer))
        .capture(HookPoint::AttnRotK(layer));
    let ids = [1u32, 17, 250, 3, 99, 42];
    let mut cache = KvCache::new(&model);
    model.forward(Input::Ids(&ids), &mut cache, &mut hooks).unwrap();
    for (plain, rotated) in [(HookPoint::AttnQ(layer), HookPoint::AttnRotQ(layer)), (HookPoint::AttnK(layer), HookPoint::AttnRotK(layer))] {
        let a = hooks.captured(&plain).unwrap();
        let b = hooks.captured(&rotated).unwrap();
        assert_eq!(a.dims(), b.dims(), "{plain}");
        // [1, heads, L, d_head]: position 0 equal, position 5 rotated.
        let diff = |pos: usize| -> f32 {
            let x = a.i((.., .., pos, ..)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = b.i((.., .., pos, ..)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max)
        };
        assert!(diff(0) < 1e-6, "{plain} vs {rotated} at position 0: {}", diff(0));
        assert!(diff(5) > 1e-3, "{plain} vs {rotated} at position 5: RoPE did not rotate");
        let norm = |t: &candle_core::Tensor| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        let (na, nb) = (norm(a), norm(b));
        assert!((na - nb).abs() / na < 1e-5, "{plain}: rotation changed the norm ({na} vs {nb})");
    }
    assert_eq!(HookPoint::AttnRotQ(3).to_string(), "blocks.3.attn.hook_rot_q");
    assert_eq!("blocks.2.attn.hook_rot_k".parse::<HookPoint>().unwrap(), HookPoint::AttnRotK(2));
}
