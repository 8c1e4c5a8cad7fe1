// Package measure computes the SHA-256 digests that rimon records: of single
// regular files, streamed, and of whole directory trees, as one deterministic
// digest specified in docs/FORMAT.md.
//
// # Safety
//
// [File] opens with O_NONBLOCK and refuses anything that is not a regular file
// (FIFOs, sockets, device nodes), so measuring never blocks on a pipe or reads a
// device. It compares the file's identity (device, inode), size, modification
// and change times before and after reading; a file that changed while it was
// read is read again, up to [MaxAttempts] times, then refused with
// [ErrUnstable].
//
// # Concurrency
//
// [Files] and [Tree] hash many files in parallel on a bounded pool of workers
// that never outlives the call. Results come back in input order, so callers
// that extend PCRs can do so in a deterministic order.
package measure
