//! The SSH transport against a real sshd: listing is lstat-only and survives hostile names.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use sqd::spec::SshTarget;
use sqd::transport::ssh::{self, EntryKind, SshParams};
use support::sshd::Sshd;

fn params(sshd: &Sshd, known_hosts: &std::path::Path, control: &std::path::Path) -> SshParams {
    SshParams {
        target: SshTarget::parse(&sshd.target()).expect("target"),
        key_file: Some(sshd.client_key.clone()),
        known_hosts: Some(known_hosts.to_path_buf()),
        control_dir: control.to_path_buf(),
        connect_timeout: Duration::from_secs(5),
        transfer: ssh::TransferMode::Auto,
    }
}

#[tokio::test]
async fn listing_sees_entry_kinds_without_following_links_and_keeps_name_bytes() {
    let sshd = Sshd::start();
    let dir = support::login::traversable_tempdir();
    let control = tempfile::tempdir().expect("control dir");
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"x").expect("write");
    let src = dir.path().join("src");
    sshd.share_dir(&src);
    std::os::unix::fs::symlink(&outside, src.join("link")).expect("symlink");
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("fifo");
    std::fs::create_dir(src.join("sub")).expect("sub");
    let names: Vec<Vec<u8>> = vec![
        b"new\nline".to_vec(),
        b"\xff\xfe".to_vec(),
        vec![b'y'; 250],
        b"plain".to_vec(),
    ];
    for n in &names {
        std::fs::write(src.join(std::ffi::OsStr::from_bytes(n)), b"data").expect("write");
    }
    let remote = ssh::connect(&params(&sshd, &sshd.known_hosts, control.path()))
        .await
        .expect("connect");
    let mut listing = remote.list(&src).await.expect("list");
    listing.sort_by(|a, b| a.name.cmp(&b.name));
    let kinds: Vec<(Vec<u8>, EntryKind)> =
        listing.iter().map(|e| (e.name.clone(), e.kind)).collect();
    for n in &names {
        assert!(
            kinds.contains(&(n.clone(), EntryKind::File)),
            "{n:?} missing: {kinds:?}"
        );
    }
    assert!(
        kinds.contains(&(b"link".to_vec(), EntryKind::Other)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(b"fifo".to_vec(), EntryKind::Other)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(b"sub".to_vec(), EntryKind::Dir)),
        "{kinds:?}"
    );
    // Every name can be claimed (renamed) and read back, byte for byte.
    let claim = src.join("claim");
    remote.mkdir(&claim).await.expect("mkdir");
    for n in &names {
        let name = std::ffi::OsStr::from_bytes(n);
        let moved = tokio::time::timeout(
            Duration::from_secs(5),
            remote.rename(&src.join(name), &claim.join(name)),
        )
        .await
        .unwrap_or_else(|_| panic!("rename of {n:?} hung"))
        .expect("rename");
        assert!(moved, "{n:?}");
        let (read, size, _) = tokio::time::timeout(
            Duration::from_secs(5),
            remote.read_file(&claim.join(name), 4, |_| Ok(())),
        )
        .await
        .unwrap_or_else(|_| panic!("read of {n:?} hung"))
        .expect("read");
        assert_eq!((read, size), (4, 4), "{n:?}");
        remote.remove(&claim.join(name)).await.expect("remove");
    }
}

#[tokio::test]
async fn unknown_host_keys_are_refused_with_a_clear_error() {
    let sshd = Sshd::start();
    let control = tempfile::tempdir().expect("control dir");
    let err = ssh::connect(&params(&sshd, &sshd.empty_known_hosts, control.path()))
        .await
        .err()
        .expect("must be refused");
    assert_eq!(err.kind(), "host_key_unknown", "{err}");
    let err = ssh::connect(&params(&sshd, &sshd.wrong_known_hosts, control.path()))
        .await
        .err()
        .expect("must be refused");
    assert_eq!(err.kind(), "host_key_changed", "{err}");
}
