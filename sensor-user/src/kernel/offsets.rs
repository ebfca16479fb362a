//! Kernel struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE field relocations, so the programs read struct members at offsets the
//! agent looks up here and passes in as the `OFFSETS` global. `btf-rs` is used because it parses
//! the kernel's BTF as it is, including anonymous nested structs and unions (which is where
//! `mm_struct` and `qstr` keep the members we need).

use std::path::Path;

use btf_rs::{Btf, Type};
use sensor_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(
        "cannot read kernel BTF at {path}: {source}; the sensor needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.15 or later)"
    )]
    Btf { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no `struct {0}`; this kernel is not supported")]
    NoStruct(String),
    #[error(
        "kernel BTF has no member `{member}` in `struct {strukt}`; this kernel is not supported"
    )]
    NoMember { strukt: String, member: String },
}

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads every offset the programs need.
pub fn load(btf_path: &Path) -> Result<KernelOffsets, OffsetsError> {
    let btf = Btf::from_file(btf_path).map_err(|source| OffsetsError::Btf {
        path: btf_path.display().to_string(),
        source,
    })?;
    let o = |s: &str, m: &str| member_offset(&btf, s, m);
    Ok(KernelOffsets {
        task_struct_pid: o("task_struct", "pid")?,
        task_struct_tgid: o("task_struct", "tgid")?,
        task_struct_real_parent: o("task_struct", "real_parent")?,
        task_struct_real_cred: o("task_struct", "real_cred")?,
        task_struct_exit_code: o("task_struct", "exit_code")?,
        task_struct_files: o("task_struct", "files")?,
        task_struct_mm: o("task_struct", "mm")?,
        cred_uid: o("cred", "uid")?,
        cred_euid: o("cred", "euid")?,
        cred_gid: o("cred", "gid")?,
        mm_struct_arg_start: o("mm_struct", "arg_start")?,
        mm_struct_arg_end: o("mm_struct", "arg_end")?,
        mm_struct_env_start: o("mm_struct", "env_start")?,
        mm_struct_env_end: o("mm_struct", "env_end")?,
        linux_binprm_file: o("linux_binprm", "file")?,
        files_struct_fdt: o("files_struct", "fdt")?,
        fdtable_max_fds: o("fdtable", "max_fds")?,
        fdtable_fd: o("fdtable", "fd")?,
        file_f_path: o("file", "f_path")?,
        file_private_data: o("file", "private_data")?,
        file_f_flags: o("file", "f_flags")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        dentry_d_parent: o("dentry", "d_parent")?,
        dentry_d_name: o("dentry", "d_name")?,
        qstr_name: o("qstr", "name")?,
        mount_mnt: o("mount", "mnt")?,
        mount_mnt_parent: o("mount", "mnt_parent")?,
        mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
        vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
        socket_type: o("socket", "type")?,
        task_struct_fs: o("task_struct", "fs")?,
        fs_struct_pwd: o("fs_struct", "pwd")?,
        linux_binprm_filename: o("linux_binprm", "filename")?,
        linux_binprm_interp: o("linux_binprm", "interp")?,
        file_f_inode: o("file", "f_inode")?,
        inode_i_ino: o("inode", "i_ino")?,
        inode_i_sb: o("inode", "i_sb")?,
        inode_i_nlink: o("inode", "i_nlink")?,
        super_block_s_dev: o("super_block", "s_dev")?,
        socket_sk: o("socket", "sk")?,
        sock_sk_common: o("sock", "__sk_common")?,
        sock_common_skc_daddr: o("sock_common", "skc_daddr")?,
        sock_common_skc_rcv_saddr: o("sock_common", "skc_rcv_saddr")?,
        sock_common_skc_dport: o("sock_common", "skc_dport")?,
        sock_common_skc_num: o("sock_common", "skc_num")?,
        sock_common_skc_family: o("sock_common", "skc_family")?,
        sock_common_skc_v6_daddr: o("sock_common", "skc_v6_daddr")?,
        sock_common_skc_v6_rcv_saddr: o("sock_common", "skc_v6_rcv_saddr")?,
        sock_sk_err: o("sock", "sk_err")?,
        sock_common_skc_net: o("sock_common", "skc_net")?,
        // Optional: io_uring internals change between kernels; 0 leaves opcode-only records.
        io_kiocb_opcode: o("io_kiocb", "opcode").unwrap_or(0),
        io_open_filename: nested(&btf, ("io_kiocb", "cmd"), ("io_open", "filename")),
        filename_name: o("filename", "name").unwrap_or(0),
        io_connect_addr: nested(&btf, ("io_kiocb", "cmd"), ("io_connect", "addr")),
        // Optional: only x86_64's pt_regs has these names; 0 turns the raw open hook off.
        pt_regs_orig_ax: o("pt_regs", "orig_ax").unwrap_or(0),
        pt_regs_si: o("pt_regs", "si").unwrap_or(0),
        pt_regs_dx: o("pt_regs", "dx").unwrap_or(0),
        pt_regs_di: o("pt_regs", "di").unwrap_or(0),
        pt_regs_r10: o("pt_regs", "r10").unwrap_or(0),
    })
}

/// Offset of `inner` inside `outer` where `outer`'s member holds an `inner` struct (io_uring's
/// per-opcode data overlays `io_kiocb::cmd`); 0 when either is missing.
fn nested(btf: &Btf, outer: (&str, &str), inner: (&str, &str)) -> u64 {
    match (
        member_offset(btf, outer.0, outer.1),
        member_offset(btf, inner.0, inner.1),
    ) {
        (Ok(a), Ok(b)) => a + b,
        _ => 0,
    }
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous structs and unions.
fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u64, OffsetsError> {
    let no_struct = || OffsetsError::NoStruct(strukt.to_owned());
    let types = btf.resolve_types_by_name(strukt).map_err(|_| no_struct())?;
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(no_struct)?;
    find_member(btf, s, member)
        .map(|bits| u64::from(bits / 8))
        .ok_or_else(|| OffsetsError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        })
}

/// Bit offset of `name` inside `s`, recursing into anonymous members.
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str) -> Option<u32> {
    for m in &s.members {
        let m_name = btf.resolve_name(m).unwrap_or_default();
        if m_name == name {
            return Some(m.bit_offset());
        }
        if m_name.is_empty()
            && let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m)
            && let Some(off) = find_member(btf, &inner, name)
        {
            return Some(m.bit_offset() + off);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF (no root needed) and checks what must hold on every kernel.
    #[test]
    fn offsets_from_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: no {VMLINUX_BTF} on this machine");
            return;
        }
        let o = load(path).expect("offsets");
        assert_ne!(o.task_struct_pid, o.task_struct_tgid);
        assert!(o.task_struct_real_parent > 0 && o.task_struct_mm > 0);
        assert!(o.mm_struct_arg_end > o.mm_struct_arg_start);
        assert_eq!(o.mm_struct_env_end, o.mm_struct_env_start + 8);
        assert_eq!(o.path_mnt, 0, "struct path starts with mnt on every kernel");
        assert_eq!(o.qstr_name, 8, "qstr: 8-byte hash/len union, then name");
        if cfg!(target_arch = "x86_64") {
            // The kernel's ABI: struct pt_regs is the saved register frame, fixed for x86_64.
            assert_eq!(
                (o.pt_regs_r10, o.pt_regs_dx, o.pt_regs_si, o.pt_regs_di),
                (56, 96, 104, 112)
            );
            assert_eq!(o.pt_regs_orig_ax, 120);
        }
    }

    #[test]
    fn unknown_member_is_a_clear_error() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let err = member_offset(&btf, "task_struct", "no_such_member").unwrap_err();
        assert!(err.to_string().contains("no_such_member"));
    }
}
