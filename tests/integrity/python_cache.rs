//! A thought-anchors (Python-made) cache entry whose heads are NaN everywhere must not become a
//! score of 0 with status `ok`: reading such a head is an error naming its file (partial NaN,
//! what upstream's averaging gives for a sentence without tokens, is still read as it is).

use thoughtscope::attention::{read_upstream_dir, read_upstream_head};
use thoughtscope::io::npy;

#[test]
fn a_python_cache_head_that_is_nan_everywhere_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3;
    let mut partial = vec![0.25f32; n * n];
    partial[4] = f32::NAN;
    npy::write_f32(&dir.path().join("0_0.npy"), &[n, n], &partial).unwrap();
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &vec![f32::NAN; n * n]).unwrap();
    assert!(read_upstream_head(dir.path(), 0, 0, n).unwrap()[4].is_nan(), "partial NaN is read as it is");
    let err = read_upstream_head(dir.path(), 0, 1, n).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("NaN"), "{err}");
    let err = read_upstream_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("NaN"), "{err}");
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &[0.5, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let err = read_upstream_head(dir.path(), 0, 1, n).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("inf"), "{err}");
}
