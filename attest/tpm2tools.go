package attest

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/rimon-dev/rimon/eventlog"
)

// The PCR file of tpm2_quote -o and tpm2_checkquote -f in tpm2-tools 5.4
// ("serialized" format): C structures written as they lie in memory on a
// little-endian machine.
//
//	TPML_PCR_SELECTION  u32 count, 16 x {u16 hash, u8 sizeofSelect, u8 pcrSelect[4], u8 pad}   132 bytes
//	u32                 number of TPML_DIGEST that follow
//	TPML_DIGEST...      u32 count, 8 x {u16 size, u8 buffer[64]}                                532 bytes each
//
// The values follow the selection: banks in order, PCRs ascending, eight
// to a TPML_DIGEST.
const (
	pcrSelSize    = 4 + 16*8
	pcrDigestSize = 4 + 8*66
)

// MarshalPCRsFile writes values in tpm2-tools' PCR file format; sel gives
// the order (bank by bank, PCRs ascending).
func MarshalPCRsFile(sel []eventlog.PCRKey, values map[eventlog.PCRKey][]byte) ([]byte, error) {
	type bank struct {
		alg  uint16
		mask [4]byte
		keys []eventlog.PCRKey
	}
	var banks []*bank
	for _, k := range sel {
		a, err := algID(k.Bank)
		if err != nil {
			return nil, err
		}
		if len(banks) == 0 || banks[len(banks)-1].alg != uint16(a) {
			banks = append(banks, &bank{alg: uint16(a)})
		}
		b := banks[len(banks)-1]
		b.mask[k.PCR/8] |= 1 << (k.PCR % 8)
		b.keys = append(b.keys, k)
	}
	if len(banks) > 16 {
		return nil, fmt.Errorf("too many banks")
	}
	out := make([]byte, pcrSelSize)
	binary.LittleEndian.PutUint32(out, uint32(len(banks)))
	for i, b := range banks {
		o := 4 + i*8
		binary.LittleEndian.PutUint16(out[o:], b.alg)
		out[o+2] = 3
		copy(out[o+3:o+7], b.mask[:])
	}
	var all []eventlog.PCRKey
	for _, b := range banks {
		all = append(all, b.keys...)
	}
	n := (len(all) + 7) / 8
	out = binary.LittleEndian.AppendUint32(out, uint32(n))
	for c := 0; c < n; c++ {
		chunk := all[c*8 : min(len(all), c*8+8)]
		d := make([]byte, pcrDigestSize)
		binary.LittleEndian.PutUint32(d, uint32(len(chunk)))
		for i, k := range chunk {
			v, ok := values[k]
			if !ok {
				return nil, fmt.Errorf("no value for %s", k)
			}
			o := 4 + i*66
			binary.LittleEndian.PutUint16(d[o:], uint16(len(v)))
			copy(d[o+2:o+66], v)
		}
		out = append(out, d...)
	}
	return out, nil
}

// ParsePCRsFile reads tpm2-tools' PCR file format.
func ParsePCRsFile(b []byte) (map[eventlog.PCRKey][]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: PCR file: "+format, append([]any{ErrInvalid}, a...)...)
	}
	if len(b) < pcrSelSize+4 {
		return nil, bad("%d bytes is too short for a TPML_PCR_SELECTION and a count", len(b))
	}
	nsel := binary.LittleEndian.Uint32(b)
	if nsel > 16 {
		return nil, bad("%d selections, at most 16", nsel)
	}
	var keys []eventlog.PCRKey
	for i := 0; i < int(nsel); i++ {
		o := 4 + i*8
		alg := binary.LittleEndian.Uint16(b[o:])
		size := b[o+2]
		h, ok := hashOf(tpmAlg(alg))
		if !ok {
			return nil, bad("selection %d: unknown hash 0x%x", i, alg)
		}
		if size > 4 {
			return nil, bad("selection %d: sizeofSelect %d", i, size)
		}
		for byteI := 0; byteI < int(size); byteI++ {
			for bit := 0; bit < 8; bit++ {
				if b[o+3+byteI]&(1<<bit) != 0 {
					keys = append(keys, eventlog.PCRKey{PCR: byteI*8 + bit, Bank: h})
				}
			}
		}
	}
	n := binary.LittleEndian.Uint32(b[pcrSelSize:])
	if uint64(len(b)) != uint64(pcrSelSize+4)+uint64(n)*pcrDigestSize {
		return nil, bad("%d bytes, but %d TPML_DIGEST need %d", len(b), n, pcrSelSize+4+int(n)*pcrDigestSize)
	}
	out := map[eventlog.PCRKey][]byte{}
	next := 0
	for c := 0; c < int(n); c++ {
		d := b[pcrSelSize+4+c*pcrDigestSize:]
		cnt := binary.LittleEndian.Uint32(d)
		if cnt > 8 {
			return nil, bad("TPML_DIGEST %d holds %d digests, at most 8", c, cnt)
		}
		for i := 0; i < int(cnt); i++ {
			if next >= len(keys) {
				return nil, bad("more values than selected PCRs")
			}
			o := 4 + i*66
			size := int(binary.LittleEndian.Uint16(d[o:]))
			k := keys[next]
			if size != k.Bank.Size() {
				return nil, bad("%s value has %d bytes", k, size)
			}
			out[k] = append([]byte(nil), d[o+2:o+2+size]...)
			next++
		}
	}
	if next != len(keys) {
		return nil, bad("%d PCRs selected, %d values", len(keys), next)
	}
	return out, nil
}

func tpmAlg(a uint16) tpm2.TPMAlgID { return tpm2.TPMAlgID(a) }
