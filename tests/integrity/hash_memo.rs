//! The weights-hash memo must not serve a file's old hash after the file was edited in place
//! with its size, mtime and inode kept (a poisoned memo made a fresh cache hold another model's
//! attention): the memo is keyed on the ctime too, which no user can set back.

use std::io::{Seek, SeekFrom, Write};

use thoughtscope::model::weights::weights_hash;

#[test]
fn a_file_edited_in_place_keeping_size_mtime_and_inode_misses_the_memo() {
    let dir = tempfile::tempdir().unwrap();
    let memo = dir.path().join("weights-hash.json");
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, vec![5u8; 1 << 16]).unwrap();
    let before = weights_hash(std::slice::from_ref(&model), Some(&memo)).unwrap();
    assert!(memo.is_file(), "the memo learned the file");
    let metadata = std::fs::metadata(&model).unwrap();
    let (mtime, size) = (metadata.modified().unwrap(), metadata.len());
    // The kernel's timestamps tick coarsely (a few ms): let the ctime move on.
    std::thread::sleep(std::time::Duration::from_millis(50));
    {
        let mut file = std::fs::OpenOptions::new().write(true).open(&model).unwrap();
        file.seek(SeekFrom::Start(1000)).unwrap();
        file.write_all(&[6u8]).unwrap();
        file.set_modified(mtime).unwrap();
    }
    let after = std::fs::metadata(&model).unwrap();
    assert_eq!((after.modified().unwrap(), after.len()), (mtime, size), "the edit kept size and mtime");
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&after), std::os::unix::fs::MetadataExt::ino(&metadata), "and the inode");
    let fresh = weights_hash(std::slice::from_ref(&model), None).unwrap();
    let remembered = weights_hash(std::slice::from_ref(&model), Some(&memo)).unwrap();
    assert_ne!(before, fresh, "the edit changed the content hash");
    assert_eq!(remembered, fresh, "the memo served the old hash of an edited file");
    // An unchanged file still hits: the memo now holds the new entry.
    assert_eq!(weights_hash(std::slice::from_ref(&model), Some(&memo)).unwrap(), fresh);
}
