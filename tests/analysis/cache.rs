//! The attention cache (upstream's, keyed by text and model only, made verifiable): manifest round trip, mismatches named by field,
//! native and upstream layouts, `np.save`-identical files, upstream directories without a
//! manifest, atomic replacement; integrity: checksums verified on every read, older
//! entries and leftovers of killed runs never served, upstream grids sized by the files present,
//! receiver heads refusing entries made differently, names kept inside the cache root; the
//! token pairs an entry may store (read back exactly, verified with the entry).

use std::path::Path;
use std::time::{Duration, SystemTime};

use thoughtscope::io::npy;
use thoughtscope::attention::token_pairs::{HeadTokenPairs, TokenPair, TokenPairs};
use thoughtscope::attention::{
    read_entry_dir, read_entry_token_pairs, read_upstream_dir, AttnCache, BoundaryMode, CacheKey, CacheLayout, EntryTokenPairs, Lookup,
    SentenceAttention, SentenceMode,
};
use thoughtscope::scores::{receiver_heads_from_cache_dir, ReceiverOptions, VerticalOptions};
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
    for field in ["format_version", "model", "weights_hash", "dtype", "tokenizer", "sentence_mode", "boundary_mode", "n", "layers", "heads", "checksums"] {
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
    let bytes = npy::encode_f32(&[3, 3], &values).unwrap();
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

/// Flip one bit of `path` at `offset` from its end (inside the data, past the `.npy` header).
fn flip_bit(path: &Path, offset_from_end: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - offset_from_end;
    bytes[at] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

fn manifest_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest_json(dir: &Path, json: &serde_json::Value) {
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(json).unwrap()).unwrap();
}

#[test]
fn a_flipped_bit_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path()).strict(false);
    let (key, att) = (key(4), attention(2, 3, 4, 0.0));
    let dir = cache.store(&key, &att, CacheLayout::Native, None).unwrap();
    let checksum = manifest_json(&dir)["checksums"]["attention.npy"].as_str().unwrap().to_string();
    assert!(checksum.starts_with("xxh3-128:") && checksum.len() == 9 + 32, "{checksum}");
    // The top exponent bit of the last float: 0.095 becomes ~3e37, a plausible "lift 4e38".
    flip_bit(&dir.join("attention.npy"), 1, 6);

    let message = match cache.lookup(&key).unwrap() {
        Lookup::Untrusted(error) => error.to_string(),
        other => panic!("expected an untrusted entry, got {other:?}"),
    };
    assert!(message.contains("attention.npy") && message.contains("`checksums`"), "{message}");
    assert!(message.contains(&checksum) && message.matches("xxh3-128:").count() == 2, "expected and actual: {message}");
    assert!(cache.load(&key).unwrap().is_none(), "the normal path treats the entry as a miss");

    let strict = cache.clone().strict(true);
    let err = strict.load(&key).unwrap_err().to_string();
    assert!(err.contains("THOUGHTSCOPE_STRICT_CACHE") && err.contains("attention.npy") && err.contains(&checksum), "{err}");
    let err = read_entry_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("attention.npy") && err.contains("checksum mismatch"), "{err}");

    // Recomputing replaces the damaged entry, which then serves again.
    cache.store(&key, &att, CacheLayout::Native, None).unwrap();
    assert_eq!(strict.load(&key).unwrap().unwrap(), att);
}

#[test]
fn every_head_file_of_the_upstream_layout_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path()).strict(false);
    let (key, att) = (key(4), attention(2, 3, 4, 0.0));
    let dir = cache.store(&key, &att, CacheLayout::Upstream, None).unwrap();
    assert_eq!(manifest_json(&dir)["checksums"].as_object().unwrap().len(), 6);
    assert_eq!(read_entry_dir(&dir).unwrap(), att);
    flip_bit(&dir.join("1_2.npy"), 5, 0);
    assert!(cache.load(&key).unwrap().is_none());
    let err = cache.clone().strict(true).load(&key).unwrap_err().to_string();
    assert!(err.contains("1_2.npy") && err.contains("`checksums`"), "{err}");

    // A manifest whose checksums do not cover its grid is not trusted either.
    cache.store(&key, &att, CacheLayout::Upstream, None).unwrap();
    let mut json = manifest_json(&dir);
    json["checksums"].as_object_mut().unwrap().remove("0_1.npy");
    write_manifest_json(&dir, &json);
    let err = read_entry_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("`checksums` lists 5 files") && err.contains("has 6"), "{err}");
    assert!(cache.load(&key).unwrap().is_none());
}

#[test]
fn entries_from_before_checksums_are_recomputed_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path()).strict(false);
    let (key, att) = (key(4), attention(2, 3, 4, 0.0));
    let dir = cache.store(&key, &att, CacheLayout::Native, None).unwrap();
    let mut json = manifest_json(&dir);
    json["format_version"] = 1.into();
    json.as_object_mut().unwrap().remove("checksums");
    write_manifest_json(&dir, &json);
    match cache.lookup(&key).unwrap() {
        Lookup::Untrusted(error) => {
            let message = error.to_string();
            assert!(message.contains("manifest.json") && message.contains("`format_version` is 1"), "{message}");
        }
        other => panic!("expected an untrusted entry, got {other:?}"),
    }
    assert!(cache.load(&key).unwrap().is_none());
    let err = cache.clone().strict(true).load(&key).unwrap_err().to_string();
    assert!(err.contains("`format_version`"), "{err}");
    let err = read_entry_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("no checksums"), "{err}");
    // A newer format is still a mismatch error, not something to overwrite.
    json["format_version"] = 99.into();
    write_manifest_json(&dir, &json);
    assert!(matches!(cache.load(&key), Err(Error::CacheMismatch { field, .. }) if field == "format_version"));
    // A manifest that is not JSON at all: recomputed (or an error when strict).
    std::fs::write(dir.join("manifest.json"), "{ cut off").unwrap();
    assert!(cache.load(&key).unwrap().is_none());
    let err = cache.clone().strict(true).load(&key).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("invalid cache manifest"), "{err}");
    cache.store(&key, &att, CacheLayout::Native, None).unwrap();
    assert_eq!(cache.load(&key).unwrap().unwrap(), att);
}

fn age(path: &Path, by: Duration) {
    let dir = std::fs::File::open(path).unwrap();
    dir.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn leftovers_of_killed_writes_are_removed_when_stale_and_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let model_dir = tmp.path().join("smollm2-135m");
    let stale = model_dir.join(".65c133c9cf042207.tmp-4242-0");
    let fresh = model_dir.join(".65c133c9cf042207.tmp-4243-0");
    let old_swap = model_dir.join(".65c133c9cf042207.old-4242-1");
    for dir in [&stale, &fresh, &old_swap] {
        std::fs::create_dir_all(dir).unwrap();
        npy::write_f32(&dir.join("0_0.npy"), &[2, 2], &[9.0; 4]).unwrap();
    }
    age(&stale, Duration::from_secs(3600));
    age(&old_swap, Duration::from_secs(3600));

    // Neither a lookup nor a receiver-heads scan reads them as entries.
    assert!(cache.load(&key(4)).unwrap().is_none());
    assert!(cache.upstream_entry("smollm2-135m", "65c133c9cf042207").is_none());
    let err = receiver_heads_from_cache_dir(&model_dir, &ReceiverOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no cache entries"), "{err}");

    // The next store into the model directory removes the stale ones and keeps a live write's.
    cache.store(&key(4), &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
    assert!(!stale.exists() && !old_swap.exists());
    assert!(fresh.exists(), "a temporary directory of a write that may still be running is kept");
}

fn upstream_dir_with(names: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen-14b/0123456789abcdef");
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        npy::write_f32(&dir.join(name), &[2, 2], &[1.0, 0.0, 0.5, 0.5]).unwrap();
    }
    (tmp, dir)
}

#[test]
fn upstream_grids_are_sized_by_the_files_present() {
    // Before: `99999999_0.npy` allocated a grid of 10⁸ rows, `4294967295_4294967295.npy` wrapped
    // `layers × heads` and panicked.
    for (names, bad) in [
        (vec!["0_0.npy", "99999999_0.npy"], "99999999_0.npy"),
        (vec!["4294967295_4294967295.npy"], "4294967295_4294967295.npy"),
        (vec!["0_0.npy", "0_1.npy", "1_0.npy", "0_18446744073709551615.npy"], "0_18446744073709551615.npy"),
    ] {
        let (tmp, dir) = upstream_dir_with(&names);
        let err = read_upstream_dir(&dir).unwrap_err().to_string();
        assert!(err.contains(bad) && err.contains("must be below"), "{err}");
        let err = receiver_heads_from_cache_dir(&tmp.path().join("qwen-14b"), &ReceiverOptions::default()).unwrap_err().to_string();
        assert!(err.contains(bad), "{err}");
    }
    let (_tmp, dir) = upstream_dir_with(&["0_0.npy", "0_1.npy", "1_0.npy", "01_1.npy", "1_1.npy"]);
    let err = read_upstream_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("01_1.npy") && err.contains("1_1.npy") && err.contains("again"), "{err}");
    let (_tmp, dir) = upstream_dir_with(&["0_0.npy", "0_1.npy", "1_1.npy"]);
    let err = read_upstream_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("missing 1_0.npy"), "{err}");
    let (_tmp, dir) = upstream_dir_with(&["0_0.npy", "0_1.npy", "1_0.npy", "1_1.npy"]);
    assert_eq!((read_upstream_dir(&dir).unwrap().layers(), read_upstream_dir(&dir).unwrap().heads()), (2, 2));
}

#[test]
fn receiver_heads_refuse_entries_made_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let first = CacheKey { text_id: "aaaaaaaaaaaaaaaa".into(), ..key(4) };
    let second = CacheKey { text_id: "bbbbbbbbbbbbbbbb".into(), n: 5, ..key(4) };
    let dir_a = cache.store(&first, &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
    cache.store(&second, &attention(2, 3, 5, 0.5), CacheLayout::Upstream, None).unwrap();
    let model_dir = tmp.path().join("smollm2-135m");
    // 4- and 5-sentence texts: a proximity band of 1 leaves them vertical scores.
    let vertical = VerticalOptions { proximity_ignore: 1, ..VerticalOptions::default() };
    let options = ReceiverOptions { top_k: 2, vertical };
    let result = receiver_heads_from_cache_dir(&model_dir, &options).unwrap();
    assert_eq!(result.responses.len(), 2, "same model and modes, different texts: averaged");

    let third = CacheKey { text_id: "cccccccccccccccc".into(), sentence_mode: SentenceMode::Chunks, ..key(4) };
    let dir_c = cache.store(&third, &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
    let err = receiver_heads_from_cache_dir(&model_dir, &options).unwrap_err().to_string();
    assert!(err.contains(&dir_a.display().to_string()) && err.contains(&dir_c.display().to_string()), "{err}");
    assert!(err.contains("`sentence_mode`") && err.contains("full-cot") && err.contains("chunks"), "{err}");
    std::fs::remove_dir_all(&dir_c).unwrap();

    let other_model = CacheKey { text_id: "dddddddddddddddd".into(), weights_hash: "def456".into(), ..key(4) };
    cache.store(&other_model, &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
    let err = receiver_heads_from_cache_dir(&model_dir, &options).unwrap_err().to_string();
    assert!(err.contains("`weights_hash`") && err.contains("dddddddddddddddd"), "{err}");
}

#[test]
fn names_stay_inside_the_cache_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = AttnCache::new(&root);
    // A model file `...gguf` has the stem `..`: its entries once landed beside the cache root.
    let file = tmp.path().join("...gguf");
    std::fs::write(&file, b"").unwrap();
    let name = thoughtscope::model::cache_name(file.to_str().unwrap());
    assert_eq!(name, "__");
    for model in [name.as_str(), "..", ".", "a/../..", "nul\0"] {
        let dir = cache.store(&CacheKey { model: model.into(), ..key(4) }, &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap();
        assert_eq!(dir.parent().unwrap().parent().unwrap(), root, "{model:?} -> {}", dir.display());
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2, "nothing beside the root and the model file");
    for text_id in ["..", ".", "", "a/b", "..\\x", "nul\0", ".hidden"] {
        let bad = CacheKey { text_id: text_id.into(), ..key(4) };
        let err = cache.store(&bad, &attention(2, 3, 4, 0.0), CacheLayout::Native, None).unwrap_err().to_string();
        assert!(err.contains("`text_id`"), "{text_id:?}: {err}");
        let err = cache.load(&bad).unwrap_err().to_string();
        assert!(err.contains("`text_id`"), "{text_id:?}: {err}");
        assert!(cache.upstream_entry("m", text_id).is_none());
    }
}

/// Found by the fuzzer: a manifest saying `heads: 0` (and so listing no checksum) described an
/// empty grid that needs no file, and was read as a valid, empty entry.
#[test]
fn a_manifest_with_a_zero_dimension_is_refused() {
    for field in ["layers", "heads", "n"] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AttnCache::new(tmp.path());
        let dir = cache.store(&key(3), &attention(2, 3, 3, 0.0), CacheLayout::Upstream, None).unwrap();
        let path = dir.join("manifest.json");
        let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        manifest[field] = 0.into();
        manifest.as_object_mut().unwrap().remove("checksums");
        std::fs::write(&path, manifest.to_string()).unwrap();
        let err = read_entry_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("manifest.json") && err.contains(&format!("field `{field}` is 0")), "{err}");
    }
}

/// Tasks of a batch job sharing a cache on one filesystem. Writers racing on one key
/// all succeed and leave one complete entry equal to what each wrote, and no temporaries.
#[test]
fn concurrent_writers_of_one_entry_leave_one_complete_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let att = attention(2, 3, 4, 0.25);
    // Enough rounds and writers that the swap's races happen (CI once lost one with 5 × 8).
    for round in 0..16 {
        let mut key = key(4);
        key.text_id = format!("65c133c9cf0422{round:02x}");
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| AttnCache::new(tmp.path()).store(&key, &att, CacheLayout::Native, None).unwrap());
            }
        });
        assert_eq!(AttnCache::new(tmp.path()).strict(true).load(&key).unwrap().unwrap(), att, "round {round}");
    }
    let names: Vec<String> =
        std::fs::read_dir(tmp.path().join("smollm2-135m")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "temporaries left: {names:?}");
    assert_eq!(names.len(), 16);
}

#[test]
fn cache_status_counts_entries_broken_ones_temporaries_and_what_is_missing() {
    use thoughtscope::attention::cache_status::cache_status;
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let mut ids = Vec::new();
    for (i, layout) in [CacheLayout::Native, CacheLayout::Upstream, CacheLayout::Native].into_iter().enumerate() {
        let mut key = key(4);
        key.text_id = format!("00000000000000a{i}");
        cache.store(&key, &attention(2, 3, 4, i as f32), layout, None).unwrap();
        ids.push(key.text_id);
    }
    // Damage the third entry; add a Python-made entry and a killed write's temporary.
    let broken = tmp.path().join("smollm2-135m").join(&ids[2]);
    flip_bit(&broken.join("attention.npy"), 3, 0);
    let upstream = tmp.path().join("smollm2-135m/00000000000000b0");
    std::fs::create_dir_all(&upstream).unwrap();
    npy::write_f32(&upstream.join("0_0.npy"), &[2, 2], &[1.0, 0.0, 0.5, 0.5]).unwrap();
    std::fs::create_dir_all(tmp.path().join("smollm2-135m/.00000000000000c0.tmp-77-0")).unwrap();

    let status = cache_status(tmp.path()).unwrap();
    assert_eq!(status.models.len(), 1);
    let model = &status.models[0];
    assert_eq!(model.complete.keys().cloned().collect::<Vec<_>>(), ids[..2].to_vec());
    assert_eq!(model.complete[&ids[0]], (4, "full-cot".to_string()));
    assert_eq!(model.upstream, ["00000000000000b0"]);
    assert_eq!(model.broken.len(), 1);
    assert!(model.broken[0].0 == ids[2] && model.broken[0].1.contains("checksum"), "{:?}", model.broken);
    assert_eq!(model.temporary.len(), 1);
    assert!(model.bytes > 0);
    let lines = status.lines().join("\n");
    assert!(lines.contains("2 complete (0 with token pairs), 1 thought-anchors (unverified), 1 broken, 1 temporary"), "{lines}");
    assert!(model.token_pairs.is_empty());
    // An entry that also stores token pairs is counted with their shape.
    let mut with_pairs = key(4);
    with_pairs.text_id = "00000000000000e0".into();
    store_with_pairs(&cache, &with_pairs, &attention(2, 3, 4, 0.5), &token_pairs());
    let status = cache_status(tmp.path()).unwrap();
    assert_eq!(status.models[0].token_pairs.get("00000000000000e0"), Some(&(2, 2)), "2 heads, 2 tokens each side");
    let lines = status.lines().join("\n");
    assert!(lines.contains("3 complete (1 with token pairs: 2 heads × 2 tokens)"), "{lines}");

    let items: Vec<(String, String)> =
        [&ids[0], &ids[2], &"00000000000000b0".to_string(), &"00000000000000d0".to_string()].iter().map(|id| (format!("dir-{id}"), id.to_string())).collect();
    let missing: Vec<&str> = status.missing("smollm2-135m", &items).iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(missing, [ids[2].as_str(), "00000000000000d0"], "a broken entry is missing, an upstream one is not");
    assert_eq!(status.missing("other-model", &items).len(), 4);
    assert!(cache_status(tmp.path().join("absent")).unwrap_err().to_string().contains("absent"));
}

/// Token pairs of two heads for the 4 sentences of `key(4)` (ranges of 2, 3, 1 and 3 tokens, 2
/// tokens kept on each side).
fn token_pairs() -> TokenPairs {
    let ranges = vec![(0, 2), (2, 5), (5, 6), (6, 9)];
    let lengths: Vec<usize> = ranges.iter().map(|&(s, e)| e - s).collect();
    let length = |i: usize| lengths[i];
    let head = |layer, head, salt: f32| HeadTokenPairs {
        layer,
        head,
        pairs: (0..4)
            .map(|i| {
                (i > 0).then(|| {
                    let source = (i + layer) % i;
                    let (rows, cols) = (length(i).min(2), length(source).min(2));
                    let values = (0..rows * cols).map(|k| salt + k as f32 / 7.0).collect();
                    TokenPair { source, mean: 0.1 + f64::from(salt) + i as f64 / 3.0, rows, cols, values }
                })
            })
            .collect(),
    };
    TokenPairs {
        max_tokens: 2,
        tokens: ranges.iter().map(|&(s, e)| (s..e.min(s + 2)).map(|t| format!(" t{t}")).collect()).collect(),
        ranges,
        heads: vec![head(1, 2, 0.01), head(0, 1, 0.02)],
    }
}

fn store_with_pairs(cache: &AttnCache, key: &CacheKey, att: &SentenceAttention, pairs: &TokenPairs) -> std::path::PathBuf {
    let stored = EntryTokenPairs { pairs, skip_sink: true, selection: "two test heads" };
    cache.store_with_token_pairs(key, att, CacheLayout::Native, Some(9), Some(stored)).unwrap()
}

#[test]
fn token_pairs_are_stored_in_the_entry_and_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let (key, att, pairs) = (key(4), attention(2, 3, 4, 0.0), token_pairs());
    let dir = store_with_pairs(&cache, &key, &att, &pairs);
    assert_eq!(cache.load(&key).unwrap().unwrap(), att, "the sentence averages as before");
    let (read, record) = read_entry_token_pairs(&dir).unwrap().expect("stored");
    assert_eq!(read, pairs, "every value, mean, source and token");
    assert_eq!((record.max_tokens, record.skip_sink, record.selection.as_str()), (2, true, "two test heads"));
    assert_eq!(record.heads, [[1, 2], [0, 1]], "in the order chosen");
    let manifest = manifest_json(&dir);
    assert_eq!(manifest["format_version"], 2, "an additive field: no version bump");
    assert_eq!(manifest["checksums"].as_object().unwrap().len(), 1, "the data checksums as an older reader expects them");
    assert_eq!(manifest["token_pairs"]["checksums"].as_object().unwrap().len(), 2);
    // Cut to one token, the blocks are the first row and column of the stored ones.
    let one = read.truncated(1);
    let pair = one.heads[0].pairs[1].as_ref().unwrap();
    assert_eq!((pair.rows, pair.cols, pair.values.as_slice()), (1, 1, &pairs.heads[0].pairs[1].as_ref().unwrap().values[..1]));
    assert!(one.tokens.iter().all(|t| t.len() <= 1));
    // A store without token pairs (an entry of before): valid, and none read.
    cache.store(&key, &att, CacheLayout::Native, None).unwrap();
    assert!(manifest_json(&dir).get("token_pairs").is_none());
    assert!(read_entry_token_pairs(&dir).unwrap().is_none());
    assert_eq!(cache.load(&key).unwrap().unwrap(), att);
    // Token pairs of other sentences are refused before anything is written.
    let mut other = pairs.clone();
    other.ranges.pop();
    let stored = EntryTokenPairs { pairs: &other, skip_sink: true, selection: "" };
    let err = cache.store_with_token_pairs(&key, &att, CacheLayout::Native, None, Some(stored)).unwrap_err().to_string();
    assert!(err.contains("token pairs of 3 sentences"), "{err}");
}

#[test]
fn a_damaged_or_inconsistent_token_pair_file_makes_the_entry_untrusted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let (key, att, pairs) = (key(4), attention(2, 3, 4, 0.0), token_pairs());
    let dir = store_with_pairs(&cache, &key, &att, &pairs);
    flip_bit(&dir.join("token_pairs.npy"), 1, 6);
    match cache.lookup(&key).unwrap() {
        Lookup::Untrusted(error) => {
            let message = error.to_string();
            assert!(message.contains("token_pairs.npy") && message.contains("`token_pairs.checksums`"), "{message}");
        }
        other => panic!("expected an untrusted entry, got {other:?}"),
    }
    assert!(cache.load(&key).unwrap().is_none(), "recomputed, as a damaged data file");
    for err in [read_entry_dir(&dir).unwrap_err().to_string(), read_entry_token_pairs(&dir).unwrap_err().to_string()] {
        assert!(err.contains("token_pairs.npy") && err.contains("checksum mismatch"), "{err}");
    }

    // A file whose checksum was updated but that no longer fits the manifest: named by field.
    let dir = store_with_pairs(&cache, &key, &att, &pairs);
    let json_path = dir.join("token_pairs.json");
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    file["heads"][0]["pairs"][2]["source"] = 3.into();
    let bytes = serde_json::to_vec(&file).unwrap();
    std::fs::write(&json_path, &bytes).unwrap();
    let mut manifest = manifest_json(&dir);
    manifest["token_pairs"]["checksums"]["token_pairs.json"] = thoughtscope::attention::cache::checksum(&bytes).into();
    write_manifest_json(&dir, &manifest);
    let err = read_entry_token_pairs(&dir).unwrap_err().to_string();
    assert!(err.contains("token_pairs.json") && err.contains("heads[0].pairs[2]") && err.contains("source 3"), "{err}");
    // A manifest naming another file to read is refused.
    manifest["token_pairs"]["checksums"] = serde_json::json!({"token_pairs.json": "x", "../attention.npy": "y"});
    write_manifest_json(&dir, &manifest);
    let err = read_entry_token_pairs(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("token_pairs.checksums"), "{err}");
    assert!(cache.load(&key).unwrap().is_none());
}
