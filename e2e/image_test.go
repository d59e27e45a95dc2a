//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestImage is a one-layer image made for a test, stored as an OCI image
// layout (for crane, regctl and skopeo) and as a plain file (for oras).
type TestImage struct {
	Payload     []byte // the file inside the layer; random, so every image differs
	PayloadFile string // the same bytes as a file named payload.bin, for oras
	Layer       []byte // the gzipped layer blob, exactly as pushed
	LayerDigest string // sha256:…
	Layout      string // OCI image layout directory; the image is tagged layoutTag
}

const (
	layoutTag          = "v1"
	payloadName        = "payload.bin"
	payloadMediaType   = "application/vnd.vault-plugin-registry.e2e.payload"
	ociManifestType    = "application/vnd.oci.image.manifest.v1+json"
	ociConfigType      = "application/vnd.oci.image.config.v1+json"
	ociLayerType       = "application/vnd.oci.image.layer.v1.tar+gzip"
	ociIndexType       = "application/vnd.oci.image.index.v1+json"
	ociRefNameAnnotate = "org.opencontainers.image.ref.name"
)

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// NewTestImage builds a small random image in a fresh directory.
func NewTestImage(t testing.TB) *TestImage {
	t.Helper()
	dir := t.TempDir()
	img := &TestImage{Payload: make([]byte, 4096), Layout: filepath.Join(dir, "layout")}
	if _, err := rand.Read(img.Payload); err != nil {
		t.Fatal(err)
	}
	img.PayloadFile = filepath.Join(dir, "file", payloadName)
	mustWrite(t, img.PayloadFile, img.Payload)

	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	hdr := &tar.Header{Name: payloadName, Mode: 0o644, Size: int64(len(img.Payload)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	tw.Write(img.Payload)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gzBuf bytes.Buffer
	gz := gzip.NewWriter(&gzBuf)
	gz.Write(tarBuf.Bytes())
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	img.Layer = gzBuf.Bytes()

	layer := img.putBlob(t, ociLayerType, img.Layer)
	img.LayerDigest = layer.Digest
	config := img.putBlob(t, ociConfigType, mustJSON(t, map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{},
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{"sha256:" + sha256Hex(tarBuf.Bytes())},
		},
	}))
	manifest := img.putBlob(t, ociManifestType, mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     ociManifestType,
		"config":        config,
		"layers":        []ociDescriptor{layer},
	}))
	manifest.Annotations = map[string]string{ociRefNameAnnotate: layoutTag}
	mustWrite(t, filepath.Join(img.Layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	mustWrite(t, filepath.Join(img.Layout, "index.json"), mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     ociIndexType,
		"manifests":     []ociDescriptor{manifest},
	}))
	return img
}

func (img *TestImage) putBlob(t testing.TB, mediaType string, b []byte) ociDescriptor {
	t.Helper()
	sum := sha256Hex(b)
	mustWrite(t, filepath.Join(img.Layout, "blobs", "sha256", sum), b)
	return ociDescriptor{MediaType: mediaType, Digest: "sha256:" + sum, Size: len(b)}
}

// LayerIn reads this image's layer blob from another OCI image layout (one a
// client pulled into).
func (img *TestImage) LayerIn(layout string) ([]byte, error) {
	return os.ReadFile(filepath.Join(layout, "blobs", "sha256", img.LayerDigest[len("sha256:"):]))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
