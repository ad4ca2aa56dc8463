//! The attention cache (spec §6 + §12.2 item 7): manifest round trip, mismatches named by field,
//! native and upstream layouts, `np.save`-identical files, upstream directories without a
//! manifest, atomic replacement.

use thoughtscope::io::npy;
use thoughtscope::attention::{
    read_entry_dir, read_upstream_dir, AttnCache, BoundaryMode, CacheKey, CacheLayout, SentenceAttention, SentenceMode,
};
use thoughtscope::Error;

fn attention(layers: usize, heads: usize, n: usize, salt: f32) -> SentenceAttention {
    let data = (0..layers * heads * n * n).map(|k| k as f32 * 0.001 + salt).collect();
    SentenceAttention::new(layers, heads, n, data).unwrap()
}

fn key(n: usize) -> CacheKey {
    CacheKey {
        model: "smollm2-135m".into(),
        weights_hash: "abc123".into(),
        dtype: "f32".into(),
        tokenizer: "gguf:smollm:0011".into(),
        sentence_mode: SentenceMode::FullCot,
        boundary_mode: BoundaryMode::Prefix,
        text_id: "65c133c9cf042207".into(),
        n,
        layers: 2,
        heads: 3,
    }
}

#[test]
fn native_round_trip_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let key = key(4);
    assert!(cache.load(&key).unwrap().is_none(), "empty cache");
    let att = attention(2, 3, 4, 0.0);
    let dir = cache.store(&key, &att, CacheLayout::Native, Some(321)).unwrap();
    assert_eq!(dir, tmp.path().join("smollm2-135m/65c133c9cf042207"));
    assert_eq!(cache.load(&key).unwrap().unwrap(), att);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    for field in ["format_version", "model", "weights_hash", "dtype", "tokenizer", "sentence_mode", "boundary_mode", "n", "layers", "heads"] {
        assert!(manifest.get(field).is_some(), "manifest has {field}");
    }
    assert_eq!(manifest["sentence_mode"], "full-cot");
    assert_eq!(manifest["boundary_mode"], "prefix");
    // Only the entry is left in the model directory (no temporary directories).
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("smollm2-135m")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["65c133c9cf042207"]);
    // Replacing the entry keeps it readable and leaves nothing behind.
    let att2 = attention(2, 3, 4, 1.0);
    cache.store(&key, &att2, CacheLayout::Upstream, None).unwrap();
    assert_eq!(cache.load(&key).unwrap().unwrap(), att2);
    assert_eq!(std::fs::read_dir(tmp.path().join("smollm2-135m")).unwrap().count(), 1);
}

#[test]
fn mismatch_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    cache.store(&key(4), &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
    let cases: Vec<(&str, CacheKey)> = vec![
        ("weights_hash", CacheKey { weights_hash: "other".into(), ..key(4) }),
        ("dtype", CacheKey { dtype: "f16".into(), ..key(4) }),
        ("tokenizer", CacheKey { tokenizer: "tokenizer.json:ff".into(), ..key(4) }),
        ("sentence_mode", CacheKey { sentence_mode: SentenceMode::Chunks, ..key(4) }),
        ("boundary_mode", CacheKey { boundary_mode: BoundaryMode::Offsets, ..key(4) }),
        ("n", key(5)),
        ("layers", CacheKey { layers: 3, ..key(4) }),
    ];
    for (field, other) in cases {
        match cache.load(&other) {
            Err(Error::CacheMismatch { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a mismatch, got {other:?}"),
        }
    }
    let message = cache.load(&CacheKey { dtype: "f16".into(), ..key(4) }).unwrap_err().to_string();
    assert!(message.contains("`dtype`") && message.contains("f32") && message.contains("f16"), "{message}");
}

#[test]
fn store_rejects_a_key_that_does_not_describe_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    assert!(cache.store(&key(5), &attention(2, 3, 4, 0.0), CacheLayout::Native, None).is_err());
}

#[test]
fn npy_files_are_byte_identical_to_np_save() {
    // np.save(f, np.arange(9, dtype=np.float32).reshape(3, 3) * 0.5): a 128-byte header, then data.
    let values: Vec<f32> = (0..9).map(|k| k as f32 * 0.5).collect();
    let bytes = npy::encode_f32(&[3, 3], &values);
    let mut header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }".to_vec();
    header.resize(127, b' ');
    header.push(b'\n');
    assert_eq!(&bytes[..128], &header[..]);
    assert_eq!(bytes.len(), 128 + 36);
    assert_eq!(&bytes[128 + 4..128 + 8], &0.5f32.to_le_bytes());
    let back = npy::decode(&bytes).unwrap();
    assert_eq!((back.to_f32(), back.shape), (values, vec![3, 3]));
}

#[test]
fn upstream_directories_without_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen-14b/0123456789abcdef");
    std::fs::create_dir_all(&dir).unwrap();
    let att = attention(2, 2, 3, 0.0);
    for l in 0..2 {
        for h in 0..2 {
            npy::write_f32(&dir.join(format!("{l}_{h}.npy")), &[3, 3], att.matrix(l, h)).unwrap();
        }
    }
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    assert_eq!(read_upstream_dir(&dir).unwrap(), att);
    assert_eq!(read_entry_dir(&dir).unwrap(), att);

    std::fs::remove_file(dir.join("1_0.npy")).unwrap();
    let err = read_upstream_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("missing 1_0.npy"), "{err}");

    npy::write_f32(&dir.join("1_0.npy"), &[3, 4], &[0.0; 12]).unwrap();
    let err = read_upstream_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("1_0.npy") && err.contains("not a square matrix"), "{err}");

    std::fs::write(dir.join("1_0.npy"), b"not numpy").unwrap();
    let err = read_upstream_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("1_0.npy") && err.contains("magic"), "{err}");
}

#[test]
fn npy_reader_accepts_float64_fortran_and_big_endian() {
    // float64, Fortran order: [[1, 2, 3], [4, 5, 6]] stored column-major, big-endian.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }";
    let mut h = header.as_bytes().to_vec();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    bytes.extend((h.len() as u16).to_le_bytes());
    bytes.extend(h);
    for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
        bytes.extend(v.to_be_bytes());
    }
    let array = npy::decode(&bytes).unwrap();
    assert_eq!(array.shape, vec![2, 3]);
    assert_eq!(array.data, npy::NpyData::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert!(npy::decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("bytes"));
}
