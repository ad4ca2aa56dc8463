//! A thought-anchors (Python-made) cache entry: NaN is read as upstream reads it (partial NaN for a
//! sentence without tokens, and a head NaN everywhere, which the seed's VA statistics turn into NaN
//! deltas and a rollout status saying so, never a score of 0 with status `ok`), while an infinity,
//! which no attention average can be, is an error naming the file.

use thoughtscope::attention::{read_upstream_dir, read_upstream_head};
use thoughtscope::io::npy;

#[test]
fn a_python_cache_head_is_read_with_its_nan_and_an_infinity_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3;
    let mut partial = vec![0.25f32; n * n];
    partial[4] = f32::NAN;
    npy::write_f32(&dir.path().join("0_0.npy"), &[n, n], &partial).unwrap();
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &vec![f32::NAN; n * n]).unwrap();
    assert!(read_upstream_head(dir.path(), 0, 0, n).unwrap()[4].is_nan(), "partial NaN is read as it is");
    assert!(read_upstream_head(dir.path(), 0, 1, n).unwrap().iter().all(|v| v.is_nan()), "an all-NaN head is read as it is");
    assert!(read_upstream_dir(dir.path()).is_ok());
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &[0.5, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let err = read_upstream_head(dir.path(), 0, 1, n).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("inf"), "{err}");
    let err = read_upstream_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("inf"), "{err}");
}
