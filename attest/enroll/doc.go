// Package enroll decides whether to trust a machine's attestation key
// (AK) with nothing but CA certificates: the TPM vendor's CA vouches for
// the endorsement key (EK) through its certificate, and credential
// activation (TPM 2.0 Part 1, 24 "Credential Protection") proves that the
// AK lives in the TPM that holds that EK. Cloud vTPMs (Google Compute
// Engine, Azure Trusted Launch) also carry a certificate for their AK,
// which a cloud root given by the operator may vouch for directly.
//
// It is pure: bytes and callbacks in, a verdict out. It sends nothing
// itself; the activation round trip is a function the caller supplies
// ([Activator]), so the same code serves the one-shot CLI, the fleet
// verifier and tests.
//
// # What is trusted
//
// Nothing in an [Identity] document is trusted on its word. The EK
// certificate is trusted once its chain ends at a certificate of the
// [CAPool]; the EK public area only once its key is the certificate's;
// the AK public area only once the TPM holding the EK has recovered a
// fresh random secret bound to the AK's name (or, on the AK certificate
// path, once the AK's certificate chains to the AK pool and certifies
// exactly that key). [Enroll] returns a [Result] only when every step
// passed; each failure is a [*CheckError] naming the step.
//
// # Entry point
//
// A fleet engine or the CLI calls [Enroll] with the identity document
// the agent served (GET /v1/identity), the CA pools and an [Activator]
// that POSTs the challenge to /v1/activate. The [Result] holds the
// vouched AK (its key, public area and name), the path that vouched
// ([PathActivation] or [PathAKCert]), the EK certificate and the steps,
// for the caller to print; [Result.Record] is what to store. A fleet
// verifier then attests with the recorded AK, and [Record.Check] tells it
// when the agent later shows another AK or EK ([ErrIdentityChanged]): the
// agent is then invalid until an operator enrolls it again.
//
// The agent's side of the protocol (GET /v1/identity, POST /v1/activate)
// is package attest/agent, with its client (FetchIdentity and
// HTTPActivator in that package).
package enroll
