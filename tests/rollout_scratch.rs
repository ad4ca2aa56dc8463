use candle_core::Device;
use thoughtscope::model::Model;
use thoughtscope::rollout::generate::*;
use thoughtscope::rollout::tagger::RuleTagger;

#[test]
#[ignore]
fn scratch() {
    let loaded = Model::load("smollm2-135m", &Device::Cpu).unwrap();
    let problems = read_problems(std::path::Path::new(&("/tmp/scratch/".to_owned() + &std::env::var("V").unwrap_or_default() + "problems.json"))).unwrap();
    let system = std::fs::read_to_string("/tmp/scratch/".to_owned() + &std::env::var("V").unwrap_or_default() + "system.txt").ok();
    let cfg = GenerateConfig {
        samples: std::env::var("N").map(|s| s.parse().unwrap()).unwrap_or(3),
        seed: std::env::var("SEED").map(|s| s.parse().unwrap()).unwrap_or(0),
        temperature: std::env::var("TEMP").map(|s| s.parse().unwrap()).unwrap_or(0.8),
        max_new_tokens: std::env::var("MAXTOK").map(|s| s.parse().unwrap()).unwrap_or(350),
        system_prompt: system.map(|s| s.trim_end().to_string()),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let out = generate_rollouts(&loaded, "smollm2-135m", &problems, &cfg, &RuleTagger::default(), std::path::Path::new(&("/tmp/scratch/".to_owned() + &std::env::var("V").unwrap_or_default() + "out")), &mut |r| eprintln!("{:?} {:.1}s", r, t.elapsed().as_secs_f64())).unwrap();
    for r in out {
        let f = thoughtscope::rollout::write::RolloutFiles::read(&r.dir).unwrap();
        eprintln!("=== {} ===\n{}\n", r.dir.display(), f.base_solution.solution);
        for c in &f.labeled { eprintln!("  [{}] {:?}", c.function_tags.join(","), c.chunk); }
    }
}
