//! Builds the bundled guest (`oxguest/`, freestanding C and GNU assembly) into
//! `$OUT_DIR/oxguest.elf` with the system `gcc` (override with `OXGUEST_CC`).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE_DIR: &str = "oxguest";
const LINKER_SCRIPT: &str = "linker.ld";
const OUTPUT: &str = "oxguest.elf";

/// Flags for every translation unit. The guest's kernel-mode code may be run by an instruction
/// emulator, so no SSE/AVX (general registers only) and nothing that needs a runtime.
const COMPILE_FLAGS: &[&str] = &[
    "-m64",
    "-std=gnu11",
    "-ffreestanding",
    "-fno-pic",
    "-no-pie",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fno-builtin",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-nostdlib",
    "-static",
    "-O2",
    "-Wall",
    "-Wextra",
];

fn main() {
    if let Err(message) = build() {
        eprintln!("error: building the bundled guest failed: {message}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let source_dir = Path::new(&manifest_dir).join(SOURCE_DIR);
    let compiler = env::var_os("OXGUEST_CC").unwrap_or_else(|| OsString::from("gcc"));
    println!("cargo:rerun-if-env-changed=OXGUEST_CC");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", source_dir.display());

    let sources = list_sources(&source_dir)?;
    check_compiler(&compiler)?;
    let object_dir = out_dir.join("oxguest-obj");
    fs::create_dir_all(&object_dir)
        .map_err(|e| format!("cannot create {}: {e}", object_dir.display()))?;

    let mut objects = Vec::new();
    for source in sources.iter().filter(|p| is_compiled(p)) {
        objects.push(compile(&compiler, &source_dir, source, &object_dir)?);
    }
    link(&compiler, &source_dir, &objects, &out_dir.join(OUTPUT))
}

/// Every file of the guest's source directory, each announced to cargo for rebuilds.
fn list_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_compiled(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("c" | "S"))
}

fn check_compiler(compiler: &OsString) -> Result<(), String> {
    match Command::new(compiler).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{} --version` failed ({}); the guest needs gcc for x86_64 \
             (Debian/Ubuntu: apt-get install gcc)",
            compiler.to_string_lossy(),
            output.status
        )),
        Err(e) => Err(format!(
            "cannot run `{}` ({e}); the guest is built from C and assembly and needs gcc \
             for x86_64 (Debian/Ubuntu: apt-get install gcc), or set OXGUEST_CC",
            compiler.to_string_lossy()
        )),
    }
}

fn compile(
    compiler: &OsString,
    include_dir: &Path,
    source: &Path,
    object_dir: &Path,
) -> Result<PathBuf, String> {
    let file_name = source
        .file_name()
        .ok_or_else(|| format!("{} has no file name", source.display()))?;
    let object = object_dir.join(format!("{}.o", file_name.to_string_lossy()));
    let mut command = Command::new(compiler);
    command
        .args(COMPILE_FLAGS)
        .arg("-I")
        .arg(include_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object);
    run(&mut command, &format!("compiling {}", source.display()))?;
    Ok(object)
}

fn link(
    compiler: &OsString,
    source_dir: &Path,
    objects: &[PathBuf],
    output: &Path,
) -> Result<(), String> {
    let mut command = Command::new(compiler);
    command
        .args(["-m64", "-nostdlib", "-static", "-no-pie"])
        .arg(format!(
            "-Wl,-T,{}",
            source_dir.join(LINKER_SCRIPT).display()
        ))
        .args([
            "-Wl,--build-id=none",
            "-Wl,-z,max-page-size=0x1000",
            "-Wl,-z,noexecstack",
            "-Wl,--no-warn-rwx-segments",
        ])
        .args(objects)
        .arg("-o")
        .arg(output);
    run(&mut command, &format!("linking {}", output.display()))
}

/// Runs a compiler step; its warnings become cargo warnings, a failure an error with its output.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot run {command:?}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{what} failed ({}):\n{stderr}", output.status));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
    Ok(())
}
