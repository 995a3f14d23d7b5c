//! Keeps the committed query data (`.sqlx/`) tied to the migrations it was written against.
//! The store's queries are checked at compile time against `.sqlx/`, which describes the schema
//! as `deploy/dev/sqlx-prepare.sh` found it; this script makes `cargo build` fail when the
//! migrations changed since (a renamed column, say), until that script is run again.
//!
//! Offline (the default, `SQLX_OFFLINE=true`) it compares a hash of `migrations/` with
//! `.sqlx/migrations.hash`. Online (`SQLX_OFFLINE=false`, as the prepare script builds) it
//! writes that hash to `SQLX_OFFLINE_DIR`, next to the query data the macros write there.

use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let migrations = root.join("migrations");
    let recorded = root.join(".sqlx/migrations.hash");
    println!("cargo:rerun-if-changed={}", migrations.display());
    println!("cargo:rerun-if-changed={}", recorded.display());
    println!("cargo:rerun-if-env-changed=SQLX_OFFLINE");
    println!("cargo:rerun-if-env-changed=SQLX_OFFLINE_DIR");

    let hash = format!("{:016x}\n", migrations_hash(&migrations));
    let offline = env::var("SQLX_OFFLINE").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if !offline {
        if let Ok(dir) = env::var("SQLX_OFFLINE_DIR") {
            fs::write(Path::new(&dir).join("migrations.hash"), &hash).expect("SQLX_OFFLINE_DIR is writable");
        }
        return;
    }
    let committed = fs::read_to_string(&recorded).unwrap_or_default();
    if committed != hash {
        panic!(
            "the migrations changed since the query data in .sqlx/ was written: run \
             deploy/dev/sqlx-prepare.sh (it checks every query against the new schema) and commit .sqlx/"
        );
    }
}

/// FNV-1a (64 bits) over each migration's file name and contents, in name order.
fn migrations_hash(dir: &Path) -> u64 {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("migrations/ is readable")
        .map(|e| e.expect("migrations/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let name = file.file_name().expect("a file").to_string_lossy().into_owned();
        let contents = fs::read(&file).expect("a migration is readable");
        for byte in name.bytes().chain([0]).chain(contents).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
