//! Kernel struct member offsets, read from the running kernel's BTF by the agent and handed to
//! the programs as one read-only global at load time. Rust eBPF has no CO-RE field relocations,
//! so this is how the programs stay correct across kernels.

/// Byte offsets of the members the programs read. Field names are `<struct>_<member>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_struct_pid: u64,
    pub task_struct_tgid: u64,
    pub task_struct_real_parent: u64,
    pub task_struct_real_cred: u64,
    pub task_struct_exit_code: u64,
    pub task_struct_files: u64,
    pub task_struct_mm: u64,
    pub cred_uid: u64,
    pub cred_euid: u64,
    pub cred_gid: u64,
    pub mm_struct_arg_start: u64,
    pub mm_struct_arg_end: u64,
    pub mm_struct_env_start: u64,
    pub mm_struct_env_end: u64,
    pub linux_binprm_file: u64,
    pub files_struct_fdt: u64,
    pub fdtable_max_fds: u64,
    pub fdtable_fd: u64,
    pub file_f_path: u64,
    pub file_private_data: u64,
    pub file_f_flags: u64,
    pub path_mnt: u64,
    pub path_dentry: u64,
    pub dentry_d_parent: u64,
    pub dentry_d_name: u64,
    pub qstr_name: u64,
    pub mount_mnt: u64,
    pub mount_mnt_parent: u64,
    pub mount_mnt_mountpoint: u64,
    pub vfsmount_mnt_root: u64,
    pub socket_type: u64,
    pub task_struct_fs: u64,
    pub fs_struct_pwd: u64,
    pub linux_binprm_filename: u64,
    pub linux_binprm_interp: u64,
    pub file_f_inode: u64,
    pub inode_i_ino: u64,
    pub inode_i_sb: u64,
    pub inode_i_nlink: u64,
    pub super_block_s_dev: u64,
    pub socket_sk: u64,
    pub sock_sk_common: u64,
    pub sock_common_skc_daddr: u64,
    pub sock_common_skc_rcv_saddr: u64,
    pub sock_common_skc_dport: u64,
    pub sock_common_skc_num: u64,
    pub sock_common_skc_family: u64,
    pub sock_common_skc_v6_daddr: u64,
    pub sock_common_skc_v6_rcv_saddr: u64,
    /// `sock::sk_err`: a TCP connect's error when the handshake fails.
    pub sock_sk_err: u64,
    /// `sock_common::skc_net`: the socket's network namespace, so listeners in different
    /// namespaces on one port stay apart.
    pub sock_common_skc_net: u64,
    /// io_uring request internals; 0 where the kernel's BTF lacks them, which leaves the
    /// opcode-only record (the file name or address is then not read).
    pub io_kiocb_opcode: u64,
    pub io_open_filename: u64,
    pub filename_name: u64,
    pub io_connect_addr: u64,
    /// Saved user registers (x86_64 names); 0 where the kernel's `pt_regs` has other members,
    /// which disables the raw `sys_exit` open hook.
    pub pt_regs_orig_ax: u64,
    pub pt_regs_si: u64,
    pub pt_regs_dx: u64,
    /// The first and fourth syscall arguments (x86_64), for the fentry file-operation programs.
    pub pt_regs_di: u64,
    pub pt_regs_r10: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields, every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}
