//! Compiles the eBPF C programs in `agent-ebpf/` with clang and, for the layout
//! test, compiles and runs a tiny host program that prints the C event layout.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Program sets: one folder under `agent-ebpf/` each, one object each.
const PROGRAM_SETS: &[&str] = &["sockets"];

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../agent-ebpf");
    let include = ebpf_dir.join("include");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    check_clang(&clang)?;

    for set in PROGRAM_SETS {
        let src = ebpf_dir.join(set).join(format!("{set}.bpf.c"));
        let obj = out.join(format!("{set}.bpf.o"));
        run(Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{}", target_arch()?))
            .arg("-I")
            .arg(&include)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj))
        .with_context(|| {
            format!(
                "compiling {} failed; the BPF headers come from Debian's libbpf-dev",
                src.display()
            )
        })?;
    }

    layout_probe(&clang, &include, &out)
}

fn check_clang(clang: &str) -> Result<()> {
    match Command::new(clang).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "`{clang}` not found: mop-agent compiles its eBPF programs with clang. \
             Install it (Debian: `apt-get install clang llvm libbpf-dev`) or set CLANG=/path/to/clang"
        ),
    }
}

fn target_arch() -> Result<&'static str> {
    Ok(match env::var("CARGO_CFG_TARGET_ARCH")?.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => bail!("eBPF programs are not built for target arch {other}"),
    })
}

/// Writes `c_layout.rs`: the C compiler's view of `struct mop_event`, which the
/// layout test compares with the Rust mirror.
fn layout_probe(clang: &str, include: &Path, out: &Path) -> Result<()> {
    let src = out.join("layout_probe.c");
    let fields = [
        "ts_ns",
        "tgid",
        "tid",
        "fd",
        "kind",
        "direction",
        "syscall",
        "flags",
        "total_len",
        "captured_len",
        "tuple",
        "comm",
        "data",
    ];
    let tuple_fields = [
        "saddr", "daddr", "sport", "dport", "family", "role", "flags",
    ];
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"mop_event.h\"\nint main(void) {\n",
    );
    c.push_str("printf(\"pub const EVENT_SIZE: usize = %zu;\\n\", sizeof(struct mop_event));\n");
    c.push_str("printf(\"pub const TUPLE_SIZE: usize = %zu;\\n\", sizeof(struct mop_tuple));\n");
    c.push_str("printf(\"pub const MAX_CAPTURE: usize = %d;\\n\", MOP_MAX_CAPTURE);\n");
    c.push_str("printf(\"pub const EVENT_OFFSETS: &[(&str, usize)] = &[\\n\");\n");
    for f in fields {
        c.push_str(&format!(
            "printf(\"(\\\"{f}\\\", %zu),\\n\", offsetof(struct mop_event, {f}));\n"
        ));
    }
    c.push_str("printf(\"];\\npub const TUPLE_OFFSETS: &[(&str, usize)] = &[\\n\");\n");
    for f in tuple_fields {
        c.push_str(&format!(
            "printf(\"(\\\"{f}\\\", %zu),\\n\", offsetof(struct mop_tuple, {f}));\n"
        ));
    }
    c.push_str("printf(\"];\\n\");\nreturn 0;\n}\n");
    std::fs::write(&src, c)?;
    let exe = out.join("layout_probe");
    run(Command::new(clang)
        .arg("-I")
        .arg(include)
        .arg(&src)
        .arg("-o")
        .arg(&exe))
    .context("compiling the host layout probe")?;
    let output = Command::new(&exe)
        .output()
        .context("running the layout probe")?;
    if !output.status.success() {
        bail!("layout probe failed");
    }
    std::fs::write(out.join("c_layout.rs"), output.stdout)?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
