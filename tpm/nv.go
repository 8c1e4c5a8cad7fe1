package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ErrNoNV means the NV index is not defined.
var ErrNoNV = errors.New("NV index not defined")

// nvChunk is how much one TPM2_NV_Read or TPM2_NV_Write moves; every TPM
// accepts at least this much (MAX_NV_BUFFER_SIZE is 1024 or more).
const nvChunk = 1024

// ReadNV reads a whole NV index: its size from TPM2_NV_ReadPublic, its data
// with TPM2_NV_Read in chunks, authorized by the index itself (as Azure's
// HCL report index allows).
func (t *TPM) ReadNV(ctx context.Context, index uint32) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h := tpm2.TPMHandle(index)
	pub, err := tpm2.NVReadPublic{NVIndex: h}.Execute(t.t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("TPM %s: %w: 0x%08x", t.name, ErrNoNV, index)
		}
		return nil, fmt.Errorf("TPM %s: NV_ReadPublic 0x%08x: %w", t.name, index, err)
	}
	p, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	auth := tpm2.AuthHandle{Handle: h, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	out := make([]byte, 0, p.DataSize)
	for off := 0; off < int(p.DataSize); off += nvChunk {
		n := min(nvChunk, int(p.DataSize)-off)
		rsp, err := tpm2.NVRead{AuthHandle: auth, NVIndex: tpm2.NamedHandle{Handle: h, Name: pub.NVName}, Size: uint16(n), Offset: uint16(off)}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("TPM %s: NV_Read 0x%08x at %d: %w", t.name, index, off, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// WriteNV defines an NV index of len(data) bytes under the owner
// hierarchy (readable and writable with an empty password) and writes data
// into it. rimon uses it only to give the simulator an Azure-like HCL
// report for tests.
func (t *TPM) WriteNV(ctx context.Context, index uint32, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h := tpm2.TPMHandle(index)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	pub := tpm2.TPMSNVPublic{
		NVIndex: h, NameAlg: tpm2.TPMAlgSHA256, DataSize: uint16(len(data)),
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(pub)}).Execute(t.t); err != nil {
		return fmt.Errorf("TPM %s: NV_DefineSpace 0x%08x (%d bytes): %w", t.name, index, len(data), err)
	}
	rp, err := tpm2.NVReadPublic{NVIndex: h}.Execute(t.t)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += nvChunk {
		end := min(off+nvChunk, len(data))
		_, err := tpm2.NVWrite{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: h, Name: rp.NVName},
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: data[off:end]}, Offset: uint16(off)}.Execute(t.t)
		if err != nil {
			return fmt.Errorf("TPM %s: NV_Write 0x%08x at %d: %w", t.name, index, off, err)
		}
	}
	return nil
}
