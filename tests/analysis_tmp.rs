#[test]
fn membw() {
    let t = 3000; let v: Vec<f32> = (0..6*t*t).map(|i| (i % 7) as f32).collect();
    let mut acc = vec![0f64; t];
    let start = std::time::Instant::now();
    for rep in 0..5 { for row in v.chunks(t) { for (a, &x) in acc.iter_mut().zip(row) { *a += f64::from(x); } } let _ = rep; }
    let el = start.elapsed().as_secs_f64();
    eprintln!("f64 acc: {:.3} GB/s, {:.2} ms per head, {}", 5.0*v.len() as f64*4.0/el/1e9, el/30.0*1e3, acc[5]);
    let mut acc = vec![0f32; t];
    let start = std::time::Instant::now();
    for rep in 0..5 { for row in v.chunks(t) { for (a, &x) in acc.iter_mut().zip(row) { *a += x; } } let _ = rep; }
    let el = start.elapsed().as_secs_f64();
    eprintln!("f32 acc: {:.3} GB/s, {:.2} ms per head {}", 5.0*v.len() as f64*4.0/el/1e9, el/30.0*1e3, acc[5]);
}
