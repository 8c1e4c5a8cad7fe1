// Package engine attests a fleet of agents continuously: it claims the
// agents that are due from a [fleet.Store], fetches their evidence (or
// takes the evidence they push), verifies it incrementally with package
// attest/verifier, decides each agent's state and stores it with its
// history.
//
// Like package monitor for the agent, it is the verifier's daemon part: it
// owns goroutines (a bounded pool of workers and one scheduler), timers
// and a *slog.Logger; time comes from [Options.Now].
//
// # Scheduling
//
// The scheduler asks the store for due agents ([fleet.Store.Claim], which
// leases them to this replica) at most every [Options.ClaimEvery] and
// whenever half the pool is free, never more than the pool can start at
// once; an agent's next round is due one interval later, jittered by ±10%
// so that a fleet added at once spreads out. No goroutine waits per agent:
// an idle engine costs one Claim query per tick. [Engine.Wake] attests one
// agent soon (after it was added, changed or cleared).
//
// # One round
//
// A round draws a fresh 32-byte nonce, asks the agent for the records
// after the accepted prefix (since=N, N the saved state's record count;
// 0 with no state or when a refresh is asked), and verifies them from the
// saved [verifier.State], with the agent's pinned AK (or the Azure chain),
// PCRs, banks and reference. A push ([Engine.PushHandler]) is verified by
// the same function, so a round never trusts what a one-shot
// verifier.Verify of the whole log would not.
//
// # Continuity
//
// The quote's clock information tells a reboot from a broken history. The
// same resetCount as the accepted boot: the evidence must continue the
// accepted prefix (the verifier's continuity check), the log must not be
// shorter than that prefix, and the TPM's clock must not run backwards;
// otherwise the agent is compromised, which stays until an operator
// clears it. Another resetCount: a reboot, recorded as a "reboot" event;
// the stored state and observations are dropped and the new boot's log is
// verified from record 0. An agent that answers a since beyond its log
// (400) is asked again from record 0 with a fresh nonce, and the quote
// then says which of the two it is. resetCount is compared for equality
// only (the TPM adds a per-key constant for AKs outside the endorsement
// and platform hierarchies).
//
// # States
//
// trusted and untrusted (valid evidence; findings name the files),
// invalid (a check failed, or the answer was garbage or too large),
// compromised (continuity), unreachable (network, timeout, TLS, 5xx, or no
// push in time; retried with exponential backoff from the interval). Each
// change is stored with its time and reason.
//
// # References
//
// Each round stores the distinct measurements of the newly covered
// records ([fleet.Observation]). [Engine.ReferenceReplaced] re-evaluates
// every agent that uses a replaced reference from them
// ([attest.Reevaluate]), and asks the next round for the whole log
// (verified against the accepted prefix) with the new reference.
package engine
