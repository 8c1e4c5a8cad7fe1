// Package monitor is rimon's agent: it measures everything a policy lists,
// records each measurement in the log and the PCR, and keeps measuring as
// content changes.
//
// It is the only package of rimon that owns goroutines, fsnotify watches,
// signals and a logger. What a change is measured with is package
// measure/target, what the policy covers is [policy.Expand], and the time
// it runs on is a [Clock] ([Config.Clock]), so that tests control it.
//
// # How it works
//
// [Monitor.Run] installs the watches first and measures second, so that no
// change between the two is missed. The initial scan hashes files in
// parallel and records them in path order, so the same files give the same
// records and PCR value on every machine. Then it reports ready and waits:
//
//   - fsnotify watches directories, not files, so an editor's atomic replace
//     (write a temporary file, rename it over) is seen;
//   - each changed path is measured once it has been quiet for the debounce
//     time, and again if it changed while it was measured, so the final
//     state is always measured;
//   - a record is written only when the digest changed, or the file
//     appeared or disappeared;
//   - an inotify queue overflow triggers a full rescan; running out of
//     watches is logged with the sysctl to raise and leaves periodic rescans
//     to do the watching;
//   - a path that changed and cannot be measured (it keeps changing, is
//     unreadable, over the policy's size or time budget, a FIFO or device
//     where a file was, behind a refused symbolic link) or named in UTF-8
//     gets an unmeasured record with the cause; it stays in the set of
//     unrecorded changes ([Monitor.Unrecorded], STATUS=) and is retried
//     with a backoff until its digest is recorded, as is a change whose
//     record could not be appended;
//   - a file deleted or replaced while it is read is dropped, and large
//     files, trees and images take at most half of the change workers;
//   - a periodic rescan also checks the log against the TPM;
//   - SIGHUP reloads the policy (a bad one is refused and the old one kept);
//   - when the context ends, measurements in flight are finished and
//     recorded before Run returns.
package monitor
