#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_avx2(acc: &mut [f64], row: &[f32]) { for (a, &x) in acc.iter_mut().zip(row) { *a += f64::from(x); } }
#[test]
fn membw() {
    let t = 3000; let v: Vec<f32> = (0..6*t*t).map(|i| (i % 7) as f32).collect();
    for _ in 0..2 {
    let mut acc = vec![0f64; t];
    let start = std::time::Instant::now();
    for row in v.chunks(t) { for (a, &x) in acc.iter_mut().zip(row) { *a += f64::from(x); } }
    let el = start.elapsed().as_secs_f64();
    eprintln!("f64 acc: {:.2} ms per head, {}", el/6.0*1e3, acc[5]);
    let mut acc = vec![0f64; t];
    let start = std::time::Instant::now();
    for row in v.chunks(t) { unsafe { add_avx2(&mut acc, row) } }
    let el = start.elapsed().as_secs_f64();
    eprintln!("avx2 acc: {:.2} ms per head, {}", el/6.0*1e3, acc[5]);
    }
    eprintln!("{}", std::is_x86_feature_detected!("avx2"));
}
