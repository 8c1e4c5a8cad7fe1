package azure

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// IMDSURL is where an Azure VM's instance metadata service serves the
// VCEK of the host it runs on (the THIM endpoint).
const IMDSURL = "http://169.254.169.254/metadata/THIM/amd/certification"

// FetchVCEK gets the VCEK and its ASK/ARK chain from the instance
// metadata service at url (IMDSURL on Azure) as one PEM bundle. It fails
// quickly off Azure.
func FetchVCEK(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Metadata", "true")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	rsp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the VCEK from the Azure instance metadata service (%s): %w; off Azure, give the VCEK with --vcek FILE", url, err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the VCEK from %s: %s", url, rsp.Status)
	}
	var body struct {
		VcekCert         string `json:"vcekCert"`
		CertificateChain string `json:"certificateChain"`
	}
	if err := json.NewDecoder(io.LimitReader(rsp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("VCEK from %s: %w", url, err)
	}
	if body.VcekCert == "" {
		return nil, fmt.Errorf("VCEK from %s: no vcekCert", url)
	}
	return []byte(body.VcekCert + body.CertificateChain), nil
}
