package testtpm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// EKProcess is a private swtpm manufactured like a real TPM: an RSA 2048
// EK (persisted at 0x81010001, certificate at 0x01C00002) and an ECC
// NIST P-384 EK (0x81010016, certificate at 0x01C00016), both certified
// by a CA private to the test (swtpm_setup --create-ek-cert with
// swtpm-localca).
type EKProcess struct {
	*Process
	// CADir holds the test CA: swtpm-localca-rootca-cert.pem (the root)
	// and issuercert.pem (the intermediate that signs EK certificates).
	CADir string
	// RootCA and IssuerCA are the paths of those two certificates.
	RootCA, IssuerCA string
}

// StartSwtpmEK manufactures a swtpm with EK certificates and starts it.
// A second call makes another TPM with another CA. It fails the test
// when swtpm_setup or swtpm_localca (package swtpm-tools) is missing.
func StartSwtpmEK(t testing.TB) *EKProcess {
	t.Helper()
	setup, err := exec.LookPath("swtpm_setup")
	if err != nil {
		t.Fatalf("swtpm_setup is not installed (apt-get install swtpm-tools): %v", err)
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		t.Fatalf("swtpm_localca is not installed (apt-get install swtpm-tools): %v", err)
	}
	root := t.TempDir()
	state, ca := filepath.Join(root, "state"), filepath.Join(root, "ca")
	for _, d := range []string{state, ca} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caConf := write("localca.conf", "statedir = "+ca+"\nsigningkey = "+filepath.Join(ca, "signkey.pem")+
		"\nissuercert = "+filepath.Join(ca, "issuercert.pem")+"\ncertserial = "+filepath.Join(ca, "certserial")+"\n")
	opts := write("localca.options", "--platform-manufacturer rimon-test\n--platform-version 2.1\n--platform-model swtpm\n")
	conf := write("swtpm_setup.conf", "create_certs_tool = "+localca+"\ncreate_certs_tool_config = "+caConf+
		"\ncreate_certs_tool_options = "+opts+"\nactive_pcr_banks = sha256\n")
	cmd := exec.Command(setup, "--tpm2", "--tpm-state", state, "--create-ek-cert", "--config", conf,
		"--logfile", filepath.Join(root, "setup.log"))
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(root, "setup.log"))
		t.Fatalf("swtpm_setup --create-ek-cert: %v\n%s\n%s", err, out, log)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		p := &Process{Spec: "tcp:127.0.0.1:" + strconv.Itoa(port), t: t, dir: state, port: port}
		if p.launch() {
			t.Cleanup(p.Kill)
			return &EKProcess{Process: p, CADir: ca,
				RootCA: filepath.Join(ca, "swtpm-localca-rootca-cert.pem"), IssuerCA: filepath.Join(ca, "issuercert.pem")}
		}
	}
	log, _ := os.ReadFile(filepath.Join(state, "swtpm.log"))
	t.Fatalf("swtpm did not start; its log:\n%s", log)
	return nil
}
