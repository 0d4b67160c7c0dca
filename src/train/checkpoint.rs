//! Checkpoints: named tensors and string metadata in a safetensors file,
//! written atomically.
//!
//! # Format
//!
//! A standard [safetensors](https://github.com/huggingface/safetensors) file,
//! readable by the Python and Rust libraries. Tensors are stored as:
//!
//! | lpac tensor | safetensors dtype |
//! |---|---|
//! | f32 with f32 storage | `F32` |
//! | f32 with f64 storage (f64 runs) | `F64`, loaded back as f32-typed with f64 storage |
//! | i32 | `I32` |
//! | bool | `BOOL` (one byte, 0 or 1) |
//!
//! bf16 and f16 tensors are not stored yet (the runtime keeps parameters and
//! optimiser state in f32); saving one is an error, and loading any other
//! safetensors dtype is an error naming the tensor.
//!
//! The bytes are deterministic: tensors are laid out as the safetensors
//! library lays them out (by descending alignment, then by name) and the
//! header is written with sorted metadata keys, so equal checkpoints give
//! equal files.
//!
//! # Atomicity
//!
//! [`save_atomic`] writes the whole file to a temporary file in the same
//! directory, fsyncs it, renames it over the destination and fsyncs the
//! directory. Rename within a directory is atomic on POSIX file systems, so a
//! crash at any moment leaves either the old checkpoint or the new one, never
//! a mixture; at worst a stray temporary file (`.NAME.tmp-PID-N`) remains,
//! which the next successful save of the same path removes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lpac_ir::interp::{Tensor, TensorData};
use lpac_ir::{DType, TensorType};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// Named tensors (parameters, optimiser state, …) and string metadata (step,
/// seed, model source, tokenizer, …).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }
}

/// The key safetensors reserves for metadata in its header.
const METADATA_KEY: &str = "__metadata__";

/// One tensor ready to be written: its safetensors dtype, shape and bytes.
struct Encoded<'a> {
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    bytes: Vec<u8>,
}

fn encode_tensor<'a>(name: &'a str, tensor: &'a Tensor) -> Result<Encoded<'a>, String> {
    tensor.check().map_err(|e| format!("cannot save tensor `{name}`: {e}"))?;
    let (dtype, bytes) = match (tensor.dtype, &tensor.data) {
        (DType::F32, TensorData::F32(v)) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (DType::F32, TensorData::F64(v)) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (DType::I32, TensorData::I32(v)) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (DType::Bool, TensorData::Bool(v)) => (Dtype::BOOL, v.iter().map(|&b| u8::from(b)).collect()),
        (dtype, _) => {
            return Err(format!(
                "cannot save tensor `{name}`: checkpoints hold f32, i32 and bool tensors, not {dtype}"
            ));
        }
    };
    Ok(Encoded { name, dtype, shape: &tensor.shape, bytes })
}

fn dtype_name(dtype: Dtype) -> String {
    // `Dtype`'s Debug form is its name in the file format (`F32`, `BF16`, …).
    format!("{dtype:?}")
}

/// The checkpoint as safetensors bytes (see the module docs for the layout).
pub fn to_bytes(ck: &Checkpoint) -> Result<Vec<u8>, String> {
    if ck.tensors.contains_key(METADATA_KEY) {
        return Err(format!("cannot save a tensor named `{METADATA_KEY}`: safetensors reserves that name"));
    }
    let mut encoded = ck.tensors.iter().map(|(name, t)| encode_tensor(name, t)).collect::<Result<Vec<_>, _>>()?;
    // The safetensors library's order: descending alignment, then name.
    encoded.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(b.name)));

    // The header, written by hand so the key order is the library's
    // (metadata first, then tensors in data order; dtype, shape, offsets).
    let json = |e: serde_json::Error| format!("cannot encode the checkpoint header: {e}");
    let mut entries = Vec::with_capacity(encoded.len() + 1);
    if !ck.metadata.is_empty() {
        entries.push(format!("\"{METADATA_KEY}\":{}", serde_json::to_string(&ck.metadata).map_err(json)?));
    }
    let mut offset = 0usize;
    for e in &encoded {
        let end = offset + e.bytes.len();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            serde_json::to_string(e.name).map_err(json)?,
            dtype_name(e.dtype),
            serde_json::to_string(e.shape).map_err(json)?,
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');

    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for e in &encoded {
        bytes.extend_from_slice(&e.bytes);
    }
    Ok(bytes)
}

/// Distinguishes temporary files of saves running at once in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The prefix of the temporary files of saves to `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    format!(".{name}.tmp-")
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `ck` to `path` atomically: a crash at any moment leaves either the
/// previous file at `path` or the new one (see the module docs).
pub fn save_atomic(path: &Path, ck: &Checkpoint) -> Result<(), String> {
    save_atomic_with(path, ck, |file, bytes| file.write_all(bytes))
}

/// [`save_atomic`] with the step that fills the temporary file injectable, so
/// tests can make it fail midway.
fn save_atomic_with(
    path: &Path,
    ck: &Checkpoint,
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let bytes = to_bytes(ck).map_err(|e| format!("cannot save checkpoint `{}`: {e}", path.display()))?;
    write_atomic_with(path, &bytes, write).map_err(|e| format!("cannot save checkpoint `{}`: {e}", path.display()))
}

/// Replaces the file at `path` by `bytes` atomically: temporary file in the
/// same directory, fsync, rename over `path`, fsync of the directory. Readers
/// and crashes see either the old file or the new one. Errors do not name
/// `path` (callers say what the file is).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic_with(path, bytes, |file, bytes| file.write_all(bytes))
}

fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    if path.is_dir() {
        return Err("it is a directory".to_string());
    }
    let dir = parent_dir(path);
    let prefix = temp_prefix(path);
    let temp = dir.join(format!("{prefix}{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));

    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&temp)?;
        write(&mut file, bytes)?;
        file.flush()?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("writing `{}` failed: {e}", temp.display()));
    }
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("renaming `{}` over it failed: {e}", temp.display()));
    }
    sync_dir(&dir).map_err(|e| format!("the file was replaced, but syncing its directory failed: {e}"))?;
    remove_stale_temps(&dir, &prefix);
    Ok(())
}

/// Makes the rename durable. Only Unix can open and fsync a directory.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Removes temporary files left by earlier saves of the same checkpoint that
/// were killed before their rename (best effort).
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads a checkpoint written by [`save_atomic`] (or any safetensors file
/// whose tensors are f32, f64, i32 or bool).
pub fn load(path: &Path) -> Result<Checkpoint, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("checkpoint `{shown}` does not exist"),
        _ => format!("cannot read checkpoint `{shown}`: {e}"),
    })?;
    if meta.is_dir() {
        return Err(format!("checkpoint `{shown}` is a directory; expected a .safetensors file"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read checkpoint `{shown}`: {e}"))?;
    from_bytes(&bytes).map_err(|e| format!("`{shown}` is not a valid safetensors checkpoint: {e}"))
}

/// Parses safetensors bytes. Errors say what is wrong without the file name.
fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
    let len = bytes.len();
    let Some(head) = bytes.get(..8) else {
        return Err(format!("the file has {len} bytes, fewer than the 8-byte header length (truncated?)"));
    };
    let header_len = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    if header_len.saturating_add(8) > len as u64 {
        return Err(format!(
            "its header claims {header_len} bytes but the file has only {} after the length (truncated?)",
            len - 8
        ));
    }
    let describe = |e: SafeTensorError| match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not fill the file exactly (truncated, or bytes appended?)".to_string()
        }
        e => e.to_string(),
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(describe)?;
    let parsed = SafeTensors::deserialize(bytes).map_err(describe)?;

    let mut ck = Checkpoint::new();
    if let Some(meta) = metadata.metadata() {
        ck.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    for (name, view) in parsed.iter() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => Tensor::from_f32(
                shape,
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            ),
            Dtype::F64 => Tensor::from_f64(
                shape,
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            ),
            Dtype::I32 => Tensor::from_i32(
                shape,
                data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            ),
            Dtype::BOOL => {
                if let Some(bad) = data.iter().find(|&&b| b > 1) {
                    return Err(format!("bool tensor `{name}` holds the byte {bad}, which is neither 0 nor 1"));
                }
                Tensor::from_bool(shape, data.iter().map(|&b| b == 1).collect())
            }
            other => {
                return Err(format!(
                    "tensor `{name}` has dtype {}, which lpac does not load (F32, F64, I32 and BOOL are supported)",
                    dtype_name(other)
                ));
            }
        };
        tensor.check().map_err(|e| format!("tensor `{name}`: {e}"))?;
        ck.tensors.insert(name.to_string(), tensor);
    }
    Ok(ck)
}

/// Checks that the checkpoint holds exactly the tensors `expected` (name and
/// type, in the model's order). The error names the first missing tensor, the
/// first unexpected one and the first with a wrong dtype or shape, each with
/// how many more there are, e.g. "checkpoint tensor `layers.0.attn.q.weight`
/// is `f32[64,64]`, the model expects `f32[64,32]`".
pub fn check_params(ck: &Checkpoint, expected: &[(String, TensorType)]) -> Result<(), String> {
    let more = |n: usize, what: &str| if n > 1 { format!(" (and {} more {what})", n - 1) } else { String::new() };
    let mut problems = Vec::new();

    let missing: Vec<&(String, TensorType)> = expected.iter().filter(|(n, _)| !ck.tensors.contains_key(n)).collect();
    if let Some((name, ty)) = missing.first() {
        problems.push(format!(
            "the checkpoint has no tensor `{name}` (the model's {ty}){}",
            more(missing.len(), "missing")
        ));
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<(&String, &Tensor)> = ck.tensors.iter().filter(|(n, _)| !known.contains(n.as_str())).collect();
    if let Some((name, t)) = unexpected.first() {
        problems.push(format!(
            "the checkpoint has tensor `{name}` ({}), which the model does not have{}",
            t.ty(),
            more(unexpected.len(), "unexpected")
        ));
    }
    let wrong: Vec<(&String, TensorType, &TensorType)> = expected
        .iter()
        .filter_map(|(n, ty)| ck.tensors.get(n).map(|t| (n, t.ty(), ty)))
        .filter(|(_, have, want)| have != *want)
        .collect();
    if let Some((name, have, want)) = wrong.first() {
        problems.push(format!(
            "checkpoint tensor `{name}` is {have}, the model expects {want}{}",
            more(wrong.len(), "with a wrong type")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the checkpoint does not fit the model: {}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lpac-train-checkpoint-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn sample() -> Checkpoint {
        let mut ck = Checkpoint::new();
        let odd = [
            0.0f32,
            -0.0,
            1.5,
            f32::MIN_POSITIVE / 8.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_1234),
            1e-30,
        ];
        ck.tensors.insert("layers.0.attn.q.weight".into(), Tensor::from_f32(vec![2, 4], odd.to_vec()));
        ck.tensors.insert("embed.weight".into(), Tensor::from_f32(vec![3, 2], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]));
        ck.tensors.insert("scalar".into(), Tensor::scalar_f32(3.25));
        ck.tensors.insert("empty".into(), Tensor::from_f32(vec![0, 3], vec![]));
        ck.tensors.insert("adam.step".into(), Tensor::from_i32(vec![3], vec![i32::MIN, -1, i32::MAX]));
        ck.tensors.insert("mask".into(), Tensor::from_bool(vec![3], vec![true, false, true]));
        ck.tensors.insert("f64.run".into(), Tensor::from_f64(vec![2], vec![0.1, f64::MIN_POSITIVE]));
        ck.metadata.insert("step".into(), "1200".into());
        ck.metadata.insert("seed".into(), "42".into());
        ck.metadata.insert("model".into(), "models/tiny.lpa".into());
        ck
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        match &t.data {
            TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
            TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as u32 as u64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
        }
    }

    fn assert_bit_exact(a: &Checkpoint, b: &Checkpoint) {
        assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
        for (name, t) in &a.tensors {
            let u = &b.tensors[name];
            assert_eq!((t.dtype, &t.shape, t.data.kind()), (u.dtype, &u.shape, u.data.kind()), "{name}");
            assert_eq!(bits(t), bits(u), "{name}");
        }
        assert_eq!(a.metadata, b.metadata);
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = scratch_dir("roundtrip");
        let path = dir.join("ck.safetensors");
        let ck = sample();
        save_atomic(&path, &ck).unwrap();
        let back = load(&path).unwrap();
        assert_bit_exact(&ck, &back);
        assert_eq!(back.metadata["step"], "1200");
        // Saving again gives the same bytes: the file is deterministic.
        let first = std::fs::read(&path).unwrap();
        save_atomic(&path, &back).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap());
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["ck.safetensors"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bytes_match_the_safetensors_library() {
        // With at most one metadata key the library's (HashMap-ordered) header
        // is deterministic, so the files must be identical.
        let mut ck = sample();
        ck.metadata.retain(|k, _| k == "step");
        let encoded: Vec<Encoded<'_>> = ck.tensors.iter().map(|(n, t)| encode_tensor(n, t).unwrap()).collect();
        let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = encoded
            .iter()
            .map(|e| (e.name, safetensors::tensor::TensorView::new(e.dtype, e.shape.to_vec(), &e.bytes).unwrap()))
            .collect();
        let meta: HashMap<String, String> = ck.metadata.clone().into_iter().collect();
        let theirs = safetensors::serialize(views, Some(meta)).unwrap();
        assert_eq!(to_bytes(&ck).unwrap(), theirs);
        // And the library reads ours.
        let ours = to_bytes(&sample()).unwrap();
        let parsed = SafeTensors::deserialize(&ours).unwrap();
        assert_eq!(parsed.len(), sample().tensors.len());
        assert_eq!(parsed.tensor("adam.step").unwrap().dtype(), Dtype::I32);
    }

    #[test]
    fn empty_checkpoint_round_trips() {
        let dir = scratch_dir("empty");
        let path = dir.join("ck.safetensors");
        save_atomic(&path, &Checkpoint::new()).unwrap();
        assert_eq!(load(&path).unwrap(), Checkpoint::new());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn load_reports_missing_corrupt_and_truncated_files() {
        let dir = scratch_dir("corrupt");
        let missing = dir.join("missing.safetensors");
        let err = load(&missing).unwrap_err();
        assert!(err.contains("missing.safetensors") && err.contains("does not exist"), "{err}");

        let garbage = dir.join("garbage.safetensors");
        std::fs::write(&garbage, b"this is not a checkpoint at all, just text").unwrap();
        let err = load(&garbage).unwrap_err();
        assert!(err.contains("garbage.safetensors") && err.contains("is not a valid safetensors checkpoint"), "{err}");

        let bad_json = dir.join("json.safetensors");
        let mut bytes = 8u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{nope!} ");
        std::fs::write(&bad_json, &bytes).unwrap();
        let err = load(&bad_json).unwrap_err();
        assert!(err.contains("is not a valid safetensors checkpoint") && err.contains("JSON"), "{err}");

        let good = to_bytes(&sample()).unwrap();
        let truncated = dir.join("truncated.safetensors");
        for cut in [3, 8, 40, good.len() - 1] {
            std::fs::write(&truncated, &good[..cut]).unwrap();
            let err = load(&truncated).unwrap_err();
            assert!(
                err.contains("is not a valid safetensors checkpoint") && err.contains("truncated"),
                "cut {cut}: {err}"
            );
        }
        let err = load(&dir).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        let dir = scratch_dir("dtypes");
        let path = dir.join("half.safetensors");
        let data = [0u8; 8];
        let view = safetensors::tensor::TensorView::new(Dtype::F16, vec![4], &data).unwrap();
        std::fs::write(&path, safetensors::serialize([("h.weight", view)], None).unwrap()).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("half.safetensors") && err.contains("`h.weight`") && err.contains("F16"), "{err}");

        let mut ck = Checkpoint::new();
        ck.tensors.insert("w".into(), Tensor { dtype: DType::BF16, shape: vec![1], data: TensorData::F32(vec![1.0]) });
        let err = save_atomic(&dir.join("bf16.safetensors"), &ck).unwrap_err();
        assert!(err.contains("`w`") && err.contains("bf16"), "{err}");

        let mut ck = Checkpoint::new();
        ck.tensors.insert("w".into(), Tensor::from_f32(vec![2, 2], vec![1.0]));
        let err = save_atomic(&dir.join("bad.safetensors"), &ck).unwrap_err();
        assert!(err.contains("`w`") && err.contains("elements"), "{err}");
        assert!(!dir.join("bad.safetensors").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn save_into_a_missing_directory_fails_cleanly() {
        let dir = scratch_dir("nodir");
        let path = dir.join("no/such/dir/ck.safetensors");
        let err = save_atomic(&path, &sample()).unwrap_err();
        assert!(err.contains("ck.safetensors") && err.contains("cannot save checkpoint"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_intact() {
        let dir = scratch_dir("killed");
        let path = dir.join("ck.safetensors");
        let old = sample();
        save_atomic(&path, &old).unwrap();

        let mut new = sample();
        new.tensors.insert("embed.weight".into(), Tensor::from_f32(vec![3, 2], vec![9.0; 6]));
        new.metadata.insert("step".into(), "1300".into());
        // The write dies halfway through the temporary file.
        let err = save_atomic_with(&path, &new, |file, bytes| {
            file.write_all(&bytes[..bytes.len() / 2])?;
            Err(std::io::Error::other("killed"))
        })
        .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert_bit_exact(&old, &load(&path).unwrap());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "the failed temporary file is removed: {names:?}");

        // A process killed mid-write leaves its partial temporary file behind
        // and never renames it: the checkpoint is still the old one…
        let bytes = to_bytes(&new).unwrap();
        let stray = dir.join(format!("{}99999-0", temp_prefix(&path)));
        std::fs::write(&stray, &bytes[..bytes.len() / 3]).unwrap();
        assert_bit_exact(&old, &load(&path).unwrap());
        // …and the next save succeeds and sweeps the stray file away.
        save_atomic(&path, &new).unwrap();
        assert_bit_exact(&new, &load(&path).unwrap());
        assert!(!stray.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn expected_of(ck: &Checkpoint) -> Vec<(String, TensorType)> {
        ck.tensors.iter().map(|(n, t)| (n.clone(), t.ty())).collect()
    }

    #[test]
    fn check_params_accepts_an_exact_match() {
        let ck = sample();
        check_params(&ck, &expected_of(&ck)).unwrap();
    }

    #[test]
    fn check_params_names_missing_unexpected_and_mistyped_tensors() {
        let ck = sample();
        let mut expected = expected_of(&ck);

        let mut wrong = expected.clone();
        let q = wrong.iter_mut().find(|(n, _)| n == "layers.0.attn.q.weight").unwrap();
        q.1 = TensorType::new(DType::F32, vec![4, 2]);
        let err = check_params(&ck, &wrong).unwrap_err();
        assert!(
            err.contains("checkpoint tensor `layers.0.attn.q.weight` is f32[2,4], the model expects f32[4,2]"),
            "{err}"
        );
        assert!(!err.contains("no tensor") && !err.contains("does not have"), "{err}");

        let mut wrong = expected.clone();
        wrong.iter_mut().find(|(n, _)| n == "adam.step").unwrap().1 = TensorType::new(DType::F32, vec![3]);
        let err = check_params(&ck, &wrong).unwrap_err();
        assert!(err.contains("`adam.step` is i32[3], the model expects f32[3]"), "{err}");

        expected.push(("layers.1.attn.q.weight".into(), TensorType::new(DType::F32, vec![64, 64])));
        expected.push(("layers.2.attn.q.weight".into(), TensorType::new(DType::F32, vec![64, 64])));
        expected.retain(|(n, _)| n != "mask");
        let err = check_params(&ck, &expected).unwrap_err();
        assert!(
            err.contains("no tensor `layers.1.attn.q.weight` (the model's f32[64,64]) (and 1 more missing)"),
            "{err}"
        );
        assert!(err.contains("has tensor `mask` (bool[3]), which the model does not have"), "{err}");
        assert!(!err.contains("more unexpected"), "{err}");
    }
}
