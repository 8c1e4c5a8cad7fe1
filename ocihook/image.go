package ocihook

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Image is what the container manager says the container's image is. Each
// field is "" when unknown.
type Image struct {
	// Name is the image's name, such as docker.io/library/nginx:1.27.
	Name string
	// Ref is CRI-O's io.kubernetes.cri-o.ImageRef as given.
	Ref string
	// ID is "sha256:" and the digest of the image's config.
	ID string
	// Digest is the image's manifest digest, "sha256:<hex>".
	Digest string
	// Source says where the identity was found: cri-o, containerd or podman.
	Source string
}

// Annotations the container managers set.
const (
	annCRIOImageName     = "io.kubernetes.cri-o.ImageName"
	annCRIOImageRef      = "io.kubernetes.cri-o.ImageRef"
	annContainerdImage   = "io.kubernetes.cri.image-name"
	annK8sContainerName  = "io.kubernetes.container.name"
	annContainerdCtrName = "io.kubernetes.cri.container-name"
	annNerdctlName       = "nerdctl/name"
)

// imageFromAnnotations finds the image identity CRI-O or containerd's CRI
// plugin put in the annotations.
func imageFromAnnotations(a map[string]string) (Image, bool) {
	if a[annCRIOImageName] != "" || a[annCRIOImageRef] != "" {
		im := Image{Name: a[annCRIOImageName], Ref: a[annCRIOImageRef], Source: "cri-o"}
		if isHex64(im.Ref) {
			im.ID = "sha256:" + im.Ref
		} else if strings.HasPrefix(im.Ref, "sha256:") && isHex64(im.Ref[7:]) {
			im.ID = im.Ref
		}
		return im, true
	}
	if n := a[annContainerdImage]; n != "" {
		return Image{Name: n, Source: "containerd"}, true
	}
	return Image{}, false
}

// nameFromAnnotations is the container's name that Kubernetes runtimes
// and nerdctl put in the annotations.
func nameFromAnnotations(a map[string]string) string {
	for _, k := range []string{annK8sContainerName, annContainerdCtrName, annNerdctlName} {
		if a[k] != "" {
			return a[k]
		}
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// maxStorageFile bounds podman's containers.json and images.json.
const maxStorageFile = 256 << 20

// podmanStorage finds the container's name and image in podman's storage
// files, without calling podman (which holds its lock while the runtime
// runs the hook: podman inspect from a hook deadlocks). Podman's bundle is
// GRAPHROOT/DRIVER-containers/ID/userdata; the files are
// GRAPHROOT/DRIVER-containers/containers.json and
// GRAPHROOT/DRIVER-images/images.json (containers/storage). ok is false
// when the bundle is not laid out so.
func podmanStorage(bundle, id string) (name string, im Image, ok bool, err error) {
	if filepath.Base(bundle) != "userdata" || filepath.Base(filepath.Dir(bundle)) != id {
		return "", Image{}, false, nil
	}
	ctrDir := filepath.Dir(filepath.Dir(bundle))
	driver, isCtr := strings.CutSuffix(filepath.Base(ctrDir), "-containers")
	if !isCtr || driver == "" {
		return "", Image{}, false, nil
	}
	var ctrs []struct {
		ID       string   `json:"id"`
		Names    []string `json:"names"`
		Image    string   `json:"image"`
		Metadata string   `json:"metadata"`
	}
	if err := readJSONFile(filepath.Join(ctrDir, "containers.json"), &ctrs); err != nil {
		return "", Image{}, true, err
	}
	found := false
	var imageID, imageName string
	for _, c := range ctrs {
		if c.ID != id {
			continue
		}
		found = true
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		imageID = c.Image
		var md struct {
			ImageName string `json:"image-name"`
		}
		if json.Unmarshal([]byte(c.Metadata), &md) == nil {
			imageName = md.ImageName
		}
		break
	}
	if !found {
		return "", Image{}, true, fmt.Errorf("container %s is not in %s", id, filepath.Join(ctrDir, "containers.json"))
	}
	im = Image{Name: imageName, Source: "podman"}
	if isHex64(imageID) {
		im.ID = "sha256:" + imageID
		var imgs []struct {
			ID     string   `json:"id"`
			Digest string   `json:"digest"`
			Names  []string `json:"names"`
		}
		imagesJSON := filepath.Join(filepath.Dir(ctrDir), driver+"-images", "images.json")
		if err := readJSONFile(imagesJSON, &imgs); err != nil {
			return name, im, true, err
		}
		for _, i := range imgs {
			if i.ID != imageID {
				continue
			}
			if strings.HasPrefix(i.Digest, "sha256:") && isHex64(i.Digest[7:]) {
				im.Digest = i.Digest
			}
			if im.Name == "" && len(i.Names) > 0 {
				im.Name = i.Names[0]
			}
		}
	}
	return name, im, true, nil
}

func readJSONFile(p string, v any) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStorageFile+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if len(b) > maxStorageFile {
		return fmt.Errorf("%s is larger than %d MiB", p, maxStorageFile>>20)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
