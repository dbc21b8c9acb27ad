//! What an operator installs: `keygate --version`, the systemd unit (checked
//! by systemd's own tools), the Debian package (built with cargo-deb, read
//! back with dpkg-deb), docker/compose.yaml (parsed by a real compose
//! implementation) and the Wazuh examples the docs quote.
//!
//! The tools are installed by tests/setup.sh; a missing one fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keygate"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use keygate_testkit::cli::{read_text as read, run_tool as run};
use keygate_testkit::systemd;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// --- keygate --version ------------------------------------------------------

/// `keygate --version` prints the version, then exactly the backend types
/// this build's cargo features compiled in.
#[test]
fn version_lists_the_backends_compiled_in() {
    let out = run(Command::new(bin()).arg("--version"));
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let features = [
        ("file", cfg!(feature = "file")),
        ("sqlite", cfg!(feature = "sqlite")),
        ("mysql", cfg!(feature = "mysql")),
        ("postgres", cfg!(feature = "postgres")),
        ("redis", cfg!(feature = "redis")),
        ("ldap", cfg!(feature = "ldap")),
        ("exec", cfg!(feature = "exec")),
        ("http", cfg!(feature = "http")),
    ];
    let compiled: Vec<&str> = features
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        stdout,
        format!(
            "keygate {}\nbackends: {}\n",
            env!("CARGO_PKG_VERSION"),
            compiled.join(", ")
        )
    );
    // Every type the config knows is in that list when all features are on.
    if compiled.len() == features.len() {
        assert_eq!(compiled, keygate_config::BACKEND_TYPES);
    }
}

// --- the binary -------------------------------------------------------------

/// ELF `e_type` of a shared object or a position-independent executable.
const ET_DYN: u16 = 3;

/// The ELF type of `path` (`ET_EXEC` 2: loaded at a fixed address; `ET_DYN`
/// 3: position-independent), read from its header.
fn elf_type(path: &Path) -> u16 {
    use std::io::Read;
    let mut header = [0u8; 18];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&header[..4], b"\x7fELF", "{} is not ELF", path.display());
    let bytes = [header[16], header[17]];
    match header[5] {
        1 => u16::from_le_bytes(bytes),
        2 => u16::from_be_bytes(bytes),
        other => panic!("{}: unknown ELF data encoding {other}", path.display()),
    }
}

/// What build.rs tells cargo for a release build of the binary on
/// x86_64 glibc Linux: the script itself, compiled and run here with the
/// environment cargo gives it, so the release link is checked without a
/// release build.
fn release_link_instructions() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("build-script");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = run(Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "build_script_build",
            "-o",
        ])
        .arg(&script)
        .arg(repo().join("build.rs")));
    assert!(out.status.success(), "rustc build.rs: {out:?}");
    let out = run(Command::new(&script)
        .env_clear()
        .env("PROFILE", "release")
        .env("CARGO_CFG_TARGET_OS", "linux")
        .env("CARGO_CFG_TARGET_ENV", "gnu")
        .env("CARGO_CFG_TARGET_FEATURE", "fxsr,sse,sse2")
        .env("TARGET", "x86_64-unknown-linux-gnu")
        .env("OUT_DIR", dir.path()));
    assert!(out.status.success(), "build.rs: {out:?}");
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// keygate is position-independent (full ASLR: it hands out secrets and
/// Wazuh runs it as root). The binary the tests run is an ELF `ET_DYN`, and
/// build.rs adds nothing to the release link that would load it at a fixed
/// address (before, it linked release builds `-no-pie`). The packaged
/// binary is checked in `debian_package_contents`; packaging/build-deb.sh
/// refuses to package a binary that is not.
#[test]
fn keygate_is_built_position_independent() {
    assert_eq!(elf_type(&bin()), ET_DYN, "{}", bin().display());
    let readelf = run(Command::new("readelf").arg("-h").arg(bin()));
    assert!(
        text(&readelf.stdout).contains("DYN (Position-Independent Executable file)"),
        "{}",
        text(&readelf.stdout)
    );
    let link = release_link_instructions();
    // The script did run its release branch (the unwinder lever).
    assert!(
        link.iter().any(|l| l.contains("gcc_eh")),
        "build.rs printed {link:?}"
    );
    for line in &link {
        assert!(
            !["no-pie", "-static", "relocation-model", "nopie"]
                .iter()
                .any(|bad| line.contains(bad)),
            "build.rs asks the release link for a fixed address: {line}"
        );
    }
}

/// The bundled SQLite is compiled with the flags `dpkg-buildflags` gives
/// (.cargo/config.toml): the binary imports glibc's fortified copies
/// (`-D_FORTIFY_SOURCE=2` at an optimised opt-level) and the stack
/// protector's failure handler (`-fstack-protector-strong`). Rust code calls
/// neither, so only the C code can bring them in; before, neither was there.
#[test]
fn bundled_c_code_is_compiled_with_fortify_and_stack_protector() {
    let out = run(Command::new("objdump").arg("-T").arg(bin()));
    assert!(out.status.success(), "{out:?}");
    let imports: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("*UND*"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    for wanted in ["__memcpy_chk", "__stack_chk_fail"] {
        assert!(
            imports.iter().any(|i| i == wanted),
            "{wanted} is not imported: {imports:?}"
        );
    }
}

// --- systemd ----------------------------------------------------------------

const UNIT: &str = "config/systemd/keygate.service";

/// `systemd-analyze verify` accepts the shipped unit without a single
/// warning. It runs here without a running systemd: `--root` makes it resolve
/// the unit's commands and dependencies inside a prepared tree (the host has
/// no /usr/bin/keygate), `--man=no` skips checking Documentation=man:keygate(1)
/// with the host's man. It exits 0 on unknown keys and bad values, printing a
/// warning, so any output fails the test.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let root = systemd::unit_root(&bin(), &[(&repo().join(UNIT), "keygate.service")]);
    let out = systemd::verify(root.path(), &["keygate.service"]);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The verify check above does catch a broken unit (an unknown key).
#[test]
fn systemd_analyze_verify_reports_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("keygate.service");
    std::fs::write(
        &broken,
        read(repo().join(UNIT)).replace("[Service]\n", "[Service]\nProtectEverything=yes\n"),
    )
    .unwrap();
    let root = systemd::unit_root(&bin(), &[(&broken, "keygate.service")]);
    let out = systemd::verify(root.path(), &["keygate.service"]);
    assert!(
        text(&out.stderr).contains("Unknown key 'ProtectEverything'"),
        "{out:?}"
    );
}

/// The daemon can read its config: the postinst gives it to group keygate,
/// and the unit, whose primary group is wazuh, adds keygate as a
/// supplementary group (systemd does not add the user's own primary group).
#[test]
fn unit_groups_can_read_the_config_the_postinst_protects() {
    let unit = read(repo().join(UNIT));
    let postinst = read(repo().join("packaging/debian/postinst"));
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect()
    };
    assert_eq!(value("User"), ["keygate"]);
    assert_eq!(value("Group"), ["wazuh"]);
    assert!(
        postinst.contains("chown root:keygate \"$CONFIG\"") && postinst.contains("chmod 0640"),
        "{postinst}"
    );
    assert!(
        value("SupplementaryGroups").iter().any(|g| g == "keygate"),
        "the config is root:keygate 0640, but the unit's groups are {:?} + {:?}",
        value("Group"),
        value("SupplementaryGroups")
    );
}

/// The hardening holds: an overall exposure of 2.0 or less.
#[test]
fn systemd_unit_exposure_is_at_most_2() {
    let level = systemd::exposure(&repo().join(UNIT));
    assert!(level <= 2.0, "overall exposure {level} > 2.0");
}

/// The exposure measure is sensitive: the unit without its hardening lines
/// rates far worse, so the test above cannot pass by accident.
#[test]
fn unhardened_unit_rates_worse() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("keygate.service");
    let unit_text = read(repo().join(UNIT));
    let start = unit_text.find("NoNewPrivileges=").unwrap();
    let end = unit_text.find("[Install]").unwrap();
    std::fs::write(
        &unit,
        format!("{}{}", &unit_text[..start], &unit_text[end..]),
    )
    .unwrap();
    let level = systemd::exposure(&unit);
    assert!(level > 5.0, "unhardened unit rated {level}");
}

/// `keygate serve` tells systemd READY=1 (Type=notify) once the socket is
/// served: the first request after the notification is answered.
#[test]
fn serve_notifies_systemd_when_the_socket_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let notify = UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let socket = dir.path().join("keygate.sock");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n\n[[backend]]\nname = \"demo\"\ntype = \"file\"\npath = \"{}\"\n",
            socket.display(),
            repo().join("config/demo/client.keys").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env_remove("KEYGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let received = notify.recv(&mut buf);
    let reply = received.as_ref().ok().map(|_| {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"id:001").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let n = received.unwrap_or_else(|e| panic!("no notification from keygate: {e}"));
    let message = text(&buf[..n]);
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        ["READY=1"],
        "{message:?}"
    );
    let reply = reply.unwrap();
    assert!(
        reply.starts_with(r#"{"error":0,"data":{"id":"001""#),
        "{reply}"
    );
    assert!(status.success(), "{status}");
}

// --- the Debian package -----------------------------------------------------

/// Builds the package with packaging/build-deb.sh from the binary this test
/// run already built (no second build: the script's --no-build, with a
/// target dir of its own holding that binary as release/keygate).
fn build_deb(target: &Path) -> PathBuf {
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(bin(), target.join("release/keygate")).unwrap();
    let deb = target.join("keygate.deb");
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .arg("--no-build")
        .arg("--fast")
        .arg("--output")
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target));
    assert!(
        out.status.success(),
        "build-deb.sh failed: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    deb
}

/// The package holds the binary, the unit, the production config as a
/// conffile, the examples, man pages and completions, and maintainer scripts
/// that create the keygate user and wire up systemd.
#[test]
fn debian_package_contents() {
    let target = tempfile::tempdir().unwrap();
    let deb = build_deb(target.path());

    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(listing.status.success(), "{listing:?}");
    let listing = text(&listing.stdout);
    let mode_of = |path: &str| -> String {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        line.split_whitespace().next().unwrap().to_owned()
    };
    assert_eq!(mode_of("usr/bin/keygate"), "-rwxr-xr-x");
    assert_eq!(mode_of("etc/keygate/keygate.toml"), "-rw-r-----");
    for path in [
        "usr/lib/systemd/system/keygate.service",
        "usr/lib/systemd/system/keygate-sync.service",
        "usr/lib/systemd/system/keygate-sync.timer",
        "usr/share/keygate/prometheus/keygate.rules.yml",
        "usr/share/keygate/grafana/keygate.json",
        "usr/share/doc/keygate/examples/mysql.toml",
        "usr/share/doc/keygate/examples/postgres.toml",
        "usr/share/doc/keygate/examples/sqlite.toml",
        "usr/share/doc/keygate/examples/redis.toml",
        "usr/share/doc/keygate/examples/ldap.toml",
        "usr/share/doc/keygate/examples/keygate.annotated.toml",
        "usr/share/doc/keygate/examples/demo/client.keys",
        "usr/share/doc/keygate/wazuh/ossec-4.4.conf",
        "usr/share/doc/keygate/wazuh/ossec-3.8-4.3.conf",
        "usr/share/doc/keygate/copyright",
        "usr/share/doc/keygate/docs/install.md",
        "usr/share/doc/keygate/docs/backends/file.md",
        "usr/share/man/man1/keygate.1.gz",
        "usr/share/man/man1/keygate-check.1.gz",
        "usr/share/man/man1/keygate-serve.1.gz",
        "usr/share/bash-completion/completions/keygate",
        "usr/share/zsh/vendor-completions/_keygate",
        "usr/share/fish/vendor_completions.d/keygate.fish",
    ] {
        assert_eq!(mode_of(path), "-rw-r--r--", "{path}");
    }

    let control = run(Command::new("dpkg-deb").arg("--field").arg(&deb));
    let control = text(&control.stdout);
    assert!(control.contains("Package: keygate\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    let depends = control
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in {control}"));
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );

    // The files are the ones in the repository, and the binary is this one.
    let root = target.path().join("root");
    let x = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(x.status.success(), "{x:?}");
    assert_eq!(
        read(root.join("usr/lib/systemd/system/keygate.service")),
        read(repo().join(UNIT))
    );
    assert_eq!(
        read(root.join("etc/keygate/keygate.toml")),
        read(repo().join("config/keygate.production.toml"))
    );
    assert_eq!(
        read(root.join("etc/logrotate.d/keygate")),
        read(repo().join("config/logrotate/keygate"))
    );
    // The binary is position-independent and stripped: no symbol table,
    // no debug sections (none shipped elsewhere either).
    let packaged = root.join("usr/bin/keygate");
    assert_eq!(elf_type(&packaged), ET_DYN);
    let sections = run(Command::new("readelf").arg("-S").arg("-W").arg(&packaged));
    let sections = text(&sections.stdout);
    let names: Vec<&str> = sections
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(names.contains(&".text"), "{sections}");
    // .debug_gdb_scripts is loaded data (gdb's pretty-printer hint), not
    // debug information.
    for name in &names {
        assert!(
            *name != ".symtab" && (!name.starts_with(".debug_") || *name == ".debug_gdb_scripts"),
            "{name} in the packaged binary:\n{sections}"
        );
    }
    // The copyright file: Debian's machine-readable format, the notice, both
    // licenses, the MIT text as LICENSE-MIT has it.
    let copyright = read(root.join("usr/share/doc/keygate/copyright"));
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        ),
        "{copyright}"
    );
    assert!(
        copyright.contains("\nCopyright: 2026 keygate contributors\n")
            && copyright.contains("\nLicense: MIT or Apache-2.0\n")
            && copyright.contains("\nLicense: Apache-2.0\n")
            && copyright.contains("/usr/share/common-licenses/Apache-2.0"),
        "{copyright}"
    );
    let mit: String = read(repo().join("LICENSE-MIT"))
        .lines()
        .map(|l| {
            if l.is_empty() {
                " .\n".to_owned()
            } else {
                format!(" {l}\n")
            }
        })
        .collect();
    assert!(
        copyright.contains(&format!("License: MIT\n{mit}")),
        "{copyright}"
    );
    // The Debian changelog, its latest entry this very version.
    let changelog =
        run(Command::new("zcat").arg(root.join("usr/share/doc/keygate/changelog.Debian.gz")));
    assert!(changelog.status.success(), "{changelog:?}");
    assert!(
        text(&changelog.stdout).starts_with(&format!("keygate ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&changelog.stdout)
    );
    let version = run(Command::new(root.join("usr/bin/keygate")).arg("--version"));
    assert!(
        text(&version.stdout).starts_with(&format!("keygate {}\n", env!("CARGO_PKG_VERSION"))),
        "{version:?}"
    );
    // The installed config is valid and serves the socket the unit expects.
    let config = keygate_config::load(&root.join("etc/keygate/keygate.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.socket, Path::new("/run/keygate/keygate.sock"));
    // The man page is the CLI's (it documents the subcommands), with the
    // files and exit codes an operator looks for.
    let man = run(Command::new("zcat").arg(root.join("usr/share/man/man1/keygate.1.gz")));
    let man = text(&man.stdout);
    assert!(
        man.contains(".TH keygate 1") && man.contains("keygate\\-check(1)"),
        "{man}"
    );
    for section in [".SH FILES", ".SH \"EXIT STATUS\"", ".SH \"SEE ALSO\""] {
        assert!(man.contains(section), "{section} missing:\n{man}");
    }
    assert!(man.contains("/etc/keygate/keygate.toml"), "{man}");

    let control_dir = target.path().join("control");
    let e = run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control_dir));
    assert!(e.status.success(), "{e:?}");
    assert_eq!(
        read(control_dir.join("conffiles")),
        "/etc/keygate/keygate.toml\n/etc/logrotate.d/keygate\n"
    );
    // md5sums: every file but the conffiles, each sum right.
    let md5sums = read(control_dir.join("md5sums"));
    let listed: Vec<&str> = md5sums
        .lines()
        .map(|l| {
            l.split_once("  ")
                .unwrap_or_else(|| panic!("bad md5sums line {l:?}"))
                .1
        })
        .collect();
    let files: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches("./").to_owned())
        .filter(|p| !p.starts_with("etc/"))
        .collect();
    assert!(files.iter().any(|f| f == "usr/bin/keygate"), "{files:?}");
    let mut sorted_files = files.clone();
    sorted_files.sort();
    let mut sorted_listed: Vec<String> = listed.iter().map(|p| (*p).to_owned()).collect();
    sorted_listed.sort();
    assert_eq!(sorted_listed, sorted_files, "md5sums:\n{md5sums}");
    let check = run(Command::new("md5sum")
        .args(["--check", "--quiet"])
        .arg(control_dir.join("md5sums"))
        .current_dir(&root));
    assert!(check.status.success(), "{check:?}");
    let postinst = read(control_dir.join("postinst"));
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains(" keygate\n"),
        "postinst does not create the keygate user:\n{postinst}"
    );
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    // Not enabled or started on install: the operator configures first.
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    let postrm = read(control_dir.join("postrm"));
    assert!(
        postrm.contains("purge)") && postrm.contains("rm -rf /var/log/keygate"),
        "{postrm}"
    );
    let prerm = read(control_dir.join("prerm"));
    assert!(prerm.contains("keygate.service"), "{prerm}");
    for script in ["postinst", "postrm", "prerm"] {
        let sh = run(Command::new("sh").arg("-n").arg(control_dir.join(script)));
        assert!(sh.status.success(), "{script}: {sh:?}");
    }
}

/// The lintian tags docs/install.md allows, with why: the first cell of
/// each row of the table under its "What lintian reports" heading.
fn documented_lintian_tags() -> Vec<String> {
    let page = read(repo().join("docs/install.md"));
    let start = page
        .find("## What lintian reports")
        .expect("docs/install.md has no \"## What lintian reports\" section");
    let section = &page[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// lintian, Debian's package checker, finds no error, no warning and no
/// hardening or stripping remark on the package but the tags docs/install.md
/// lists with their reason (the config's mode 0640, a package never uploaded
/// to Debian), and each of those is still reported (the list does not go
/// stale; it also shows lintian ran and its output was read). Before: no
/// changelog, no notice in the copyright file, no md5sums, an unstripped
/// binary, and in a release build no PIE.
#[test]
fn lintian_reports_only_the_documented_tags() {
    let allowed = documented_lintian_tags();
    assert!(!allowed.is_empty(), "no tag listed in docs/install.md");
    let target = tempfile::tempdir().unwrap();
    let deb = build_deb(target.path());
    let out = run(Command::new("lintian")
        .args([
            "--fail-on",
            "none",
            "--tag-display-limit",
            "0",
            "--display-info",
        ])
        .arg(&deb));
    assert!(out.status.success(), "lintian: {out:?}");
    let report = text(&out.stdout);
    // "E: keygate: tag-name [context]": errors (E), warnings (W) and, for
    // the hardening and stripping tags only, information (I).
    let mut found: Vec<(String, String)> = Vec::new();
    for line in report.lines() {
        let Some((level, rest)) = line.split_once(": ") else {
            continue;
        };
        let tag = rest
            .split_once(": ")
            .map_or(rest, |(_, t)| t)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let binary_tag = tag.starts_with("hardening-") || tag.contains("unstripped");
        if level == "E" || level == "W" || (level == "I" && binary_tag) {
            found.push((tag.to_owned(), line.to_owned()));
        }
    }
    let unexpected: Vec<&String> = found
        .iter()
        .filter(|(tag, _)| !allowed.contains(tag))
        .map(|(_, line)| line)
        .collect();
    assert!(
        unexpected.is_empty(),
        "lintian tags not allowed by docs/install.md:\n{}\n\nfull report:\n{report}{}",
        unexpected
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        text(&out.stderr)
    );
    for tag in &allowed {
        assert!(
            found.iter().any(|(t, _)| t == tag),
            "docs/install.md allows {tag}, which lintian no longer reports:\n{report}"
        );
    }
}

// --- docker -----------------------------------------------------------------

/// `docker compose` (the plugin) where it is installed, else Debian's
/// `docker-compose`: both parse and validate the file without an engine.
fn compose(args: &[&str], env: &[(&str, &str)]) -> Output {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if plugin {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.arg("--file")
        .arg(repo().join("docker/compose.yaml"))
        .args(args)
        .env_remove("KEYGATE_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// compose.yaml parses; it runs keygate beside MariaDB, PostgreSQL, Redis and
/// OpenLDAP, each seeded from the fixture files the tests load; the socket
/// directory is a shared volume; every KEYGATE_BACKEND choice names a valid
/// keygate config.
#[test]
fn compose_file_parses_and_uses_the_test_fixtures() {
    let out = compose(&["config"], &[]);
    assert!(
        out.status.success(),
        "compose config: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let resolved = text(&out.stdout);
    let services = compose(&["config", "--services"], &[]);
    let services = text(&services.stdout);
    for service in [
        "keygate",
        "mariadb",
        "postgres",
        "redis",
        "redis-fixture",
        "ldap",
    ] {
        assert!(
            services.lines().any(|s| s == service),
            "{service} missing:\n{services}"
        );
    }
    let docker = repo().join("docker");
    for fixture in [
        "initdb/mysql",
        "initdb/postgres",
        "redis",
        "keygate",
        "ldap/keygate.pass",
    ] {
        let mount = format!("{}:", docker.join(fixture).display());
        assert!(
            resolved.contains(&mount),
            "{mount} is not mounted:\n{resolved}"
        );
    }
    // The LDAP image loads the same slapd.conf.in and agents.ldif.
    let ldap = read(docker.join("ldap/Dockerfile"));
    assert!(ldap.contains("COPY slapd.conf.in agents.ldif"), "{ldap}");
    assert!(
        resolved.contains("keygate-run:/run/keygate"),
        "the socket volume is not shared:\n{resolved}"
    );
    for backend in ["all", "mariadb", "postgres", "redis", "ldap"] {
        let out = compose(&["config"], &[("KEYGATE_BACKEND", backend)]);
        let resolved = text(&out.stdout);
        let wanted = format!("KEYGATE_CONFIG: /etc/keygate/compose/{backend}.toml");
        assert!(resolved.contains(&wanted), "{wanted}:\n{resolved}");
        let config = keygate_config::load(&docker.join(format!("keygate/{backend}.toml")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.server.socket, Path::new("/run/keygate/keygate.sock"));
    }
}

/// The compose parser used above rejects a broken file, so the test above
/// proves something.
#[test]
fn compose_parser_rejects_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("compose.yaml");
    std::fs::write(
        &broken,
        "services:\n  keygate:\n    image: 42\n    depends_on: 7\n",
    )
    .unwrap();
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let out = if plugin {
        run(Command::new("docker")
            .args(["compose", "--file"])
            .arg(&broken)
            .arg("config"))
    } else {
        run(Command::new("docker-compose")
            .arg("--file")
            .arg(&broken)
            .arg("config"))
    };
    assert!(!out.status.success(), "{out:?}");
}

/// The Dockerfile's instructions: comments dropped, continuation lines
/// joined, each as (INSTRUCTION, the rest).
fn dockerfile_instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The image is built in two stages, runs as a non-root user, and its
/// build keeps cargo's registry and target dir in BuildKit cache mounts
/// (so `up --build` does not recompile the dependencies), which needs the
/// `syntax` directive on the first line.
#[test]
fn dockerfile_is_multi_stage_non_root_with_cargo_cache_mounts() {
    let dockerfile = read(repo().join("docker/Dockerfile"));
    assert_eq!(
        dockerfile.lines().next(),
        Some("# syntax=docker/dockerfile:1")
    );
    let steps = dockerfile_instructions(&dockerfile);
    assert_eq!(steps.iter().filter(|(i, _)| i == "FROM").count(), 2);
    let (_, user) = steps.iter().rev().find(|(i, _)| i == "USER").unwrap();
    let name = user.split(':').next().unwrap().trim();
    assert!(name != "root" && name != "0", "{user}");
    let workdir = &steps.iter().find(|(i, _)| i == "WORKDIR").unwrap().1;
    let (_, build) = steps
        .iter()
        .find(|(i, rest)| i == "RUN" && rest.contains("cargo build --release"))
        .unwrap_or_else(|| panic!("no cargo build step:\n{dockerfile}"));
    for target in [
        "/usr/local/cargo/registry".to_owned(),
        format!("{workdir}/target"),
    ] {
        assert!(
            build.contains(&format!("--mount=type=cache,target={target} ")),
            "no cache mount for {target}: {build}"
        );
    }
    // The binary leaves the cache mount within the same step.
    let cmd = build.find("cargo build").unwrap();
    assert!(
        build[cmd..].contains("cp target/release/keygate /out/"),
        "{build}"
    );
    // What the image copies must exist.
    for src in ["config/keygate.toml", "config/demo/"] {
        assert!(repo().join(src).exists(), "{src}");
    }
}

/// The image's HEALTHCHECK (exec form: the image has no shell) asks the
/// running daemon over its control socket: it passes while the daemon
/// answers even with a backend down (the chain still answers from the
/// others and from stale cache; `keygate check`, the old healthcheck, fails
/// then and opens new pools every time), and fails once no daemon answers.
#[test]
fn docker_healthcheck_asks_the_running_daemon_not_every_backend() {
    use keygate_testkit::daemon::Daemon;
    let dockerfile = read(repo().join("docker/Dockerfile"));
    let steps = dockerfile_instructions(&dockerfile);
    let (_, health) = steps
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .unwrap_or_else(|| panic!("no HEALTHCHECK:\n{dockerfile}"));
    let exec_form = health
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("no CMD in {health}"))
        .1;
    let argv: Vec<String> = serde_json::from_str(exec_form)
        .unwrap_or_else(|e| panic!("not an exec-form CMD ({e}): {exec_form}"));
    assert_eq!(argv[0], "/usr/bin/keygate", "{argv:?}");
    let healthcheck = |config: &Path| {
        run(Command::new(bin())
            .args(&argv[1..])
            .env("KEYGATE_CONFIG", config)
            .env_remove("KEYGATE_SERVER__SOCKET"))
    };

    let down = keygate_testkit::free_port();
    let mut daemon = Daemon::start(&format!(
        "[[backend]]\nname = \"down\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{down}/0\"\n\n\
         [[backend]]\nname = \"demo\"\ntype = \"file\"\npath = \"{}\"\n",
        repo().join("config/demo/client.keys").display()
    ));
    let served = daemon.request("id:001");
    assert_eq!(served["error"], 0, "{served}");
    let healthy = healthcheck(daemon.config());
    assert!(healthy.status.success(), "{healthy:?}");
    let check = run(Command::new(bin())
        .arg("--config")
        .arg(daemon.config())
        .arg("check"));
    assert!(
        !check.status.success(),
        "check passed with a backend down: {check:?}"
    );
    daemon.stop();
    let unhealthy = healthcheck(daemon.config());
    assert_eq!(unhealthy.status.code(), Some(69), "{unhealthy:?}");
}

/// docker-compose starts the stand-in Wazuh client only once keygate's
/// healthcheck passes.
#[test]
fn compose_client_waits_for_a_healthy_daemon() {
    let out = compose(&["--profile", "client", "config"], &[]);
    assert!(out.status.success(), "{out:?}");
    let resolved = text(&out.stdout);
    let client = &resolved[resolved
        .find("  wazuh-client:")
        .unwrap_or_else(|| panic!("no wazuh-client in:\n{resolved}"))..];
    let depends = &client[client.find("depends_on:").unwrap()..];
    assert!(
        depends.starts_with("depends_on:\n      keygate:\n        condition: service_healthy"),
        "{client}"
    );
}

// --- Wazuh ------------------------------------------------------------------

/// The element of a config/wazuh example (what follows its leading comment).
fn wazuh_block(file: &str) -> String {
    let text = read(repo().join("config/wazuh").join(file));
    let end = text.find("-->").unwrap() + 3;
    text[end..].trim().to_owned()
}

/// docs/wazuh.md quotes both shipped ossec.conf examples verbatim, README.md
/// the 4.4+ one, and the 4.4+ one has no force_insert (deprecated there;
/// <force> decides).
#[test]
fn the_docs_quote_the_wazuh_examples() {
    let readme = read(repo().join("README.md"));
    let page = read(repo().join("docs/wazuh.md"));
    let new = wazuh_block("ossec-4.4.conf");
    let old = wazuh_block("ossec-3.8-4.3.conf");
    assert!(
        new.starts_with("<auth>") && new.contains("<key_request>"),
        "{new}"
    );
    assert!(
        old.starts_with("<wodle name=\"agent-key-polling\">"),
        "{old}"
    );
    assert!(!new.contains("force_insert"), "{new}");
    assert!(new.contains("<force>"), "{new}");
    assert!(
        readme.contains(&format!("```xml\n{new}\n```")),
        "README.md does not quote:\n{new}"
    );
    for block in [&new, &old] {
        assert!(
            page.contains(&format!("```xml\n{block}\n```")),
            "docs/wazuh.md does not quote:\n{block}"
        );
        assert!(block.contains("<socket>/run/keygate/keygate.sock</socket>"));
    }
}
