use thoughtscope::plot::*;
#[test]
fn gallery() {
    let n = 40;
    let mut m = vec![0.0f32; n * n];
    for i in 0..n { for j in 0..=i { m[i*n+j] = (1.0 / (1.0 + (i - j) as f32)) * if j % 7 == 3 { 3.0 } else { 1.0 }; } }
    let heat = heatmap(&m, n, &HeatmapOptions { title: "Rollout 3, layer 12 head 5 (tagged outlined)".into(), highlight: vec![5, 17, 30], index_offset: 1, colorbar_title: "attention".into(), ..Default::default() }).unwrap();
    let v1: Vec<f64> = (0..n).map(|i| if i > n - 5 { f64::NAN } else { ((i as f64) * 0.7).sin().abs() * 0.05 }).collect();
    let v2: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.3).cos().abs() * 0.04).collect();
    let lines = line_scores(&[Series::new("L12H5", v1), Series::new("L20H1", v2)], &LineOptions { title: "Vertical scores".into(), highlight: vec![5, 17, 30], ..Default::default() }).unwrap();
    let bars = bar_with_error(&["Token 0","Token 1","Token 2","Token 3","Token 4","Token 5"], &[0.4,0.2,0.35,0.1,0.05,0.5], &[0.05,0.04,0.06,0.02,0.01,0.07], &BarOptions { title: "Importance by position".into(), y_title: "importance".into(), ..Default::default() }).unwrap();
    let x: Vec<f64> = (0..60).map(|i| (i as f64 * 0.37).sin().abs()).collect();
    let y: Vec<f64> = x.iter().enumerate().map(|(i, v)| 0.5 * v + 0.2 * ((i as f64) * 1.3).cos().abs()).collect();
    let sc = scatter_with_fit(&x, &y, None, &ScatterOptions { title: "Attention vs importance".into(), x_title: "attention".into(), y_title: "importance".into(), ..Default::default() }).unwrap();
    let cells: Vec<Figure> = (0..6).map(|k| scatter_with_fit(&x[k*10..k*10+10], &y[k*10..k*10+10], None, &ScatterOptions { title: format!("Token {k} (r=0.5)"), y_range: Some((-0.1, 1.1)), ..Default::default() }).unwrap()).collect();
    let g = grid(&cells, &GridOptions { title: "By position".into(), ..Default::default() }).unwrap();
    let rect = heatmap_matrix(&[0.0,1.0,1.0,0.0,0.5,1.0, 1.0,0.0,0.0,1.0,1.0,0.0], 2, 6, &HeatmapOptions { title: "problems x tokens".into(), color_limits: ColorLimits::Fixed{min:0.0,max:1.0}, x_labels: Some((0..6).map(|k| format!("T{k}")).collect()), y_labels: Some(vec!["gsm_1".into(), "gsm_2".into()]), x_title: "token".into(), y_title: "problem".into(), ..Default::default() }).unwrap();
    let t = std::time::Instant::now();
    save_figures("/tmp/ts_gallery", &[("heat", &heat), ("lines", &lines), ("bars", &bars), ("scatter", &sc), ("grid", &g), ("rect", &rect)], &[SaveFormat::Html, SaveFormat::Png, SaveFormat::Svg]).unwrap();
    eprintln!("saved 6 figures (html+png+svg) in {:.2}s", t.elapsed().as_secs_f64());
    let df = polars::df!("rollout_id" => [0i64, 1, 2], "score" => [0.1, 0.25, f64::NAN]).unwrap();
    Report::new("Gallery").heading("Heatmap").figure(&heat).text("Some text & more").table(&df).figures([&lines, &g]).write_html("/tmp/ts_gallery/report.html").unwrap();
}
