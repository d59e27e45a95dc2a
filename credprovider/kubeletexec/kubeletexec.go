// Package kubeletexec is the kubelet's side of the exec credential
// provider protocol, done as the kubelet does it
// (k8s.io/kubernetes/pkg/credentialprovider/plugin): the configuration read
// strictly, the request encoded by the credentialprovider scheme, the
// binary run with the configuration's args and env, the response decoded
// and converted to the kubelet's internal type. The tests use it to run
// the provider without a kubelet.
package kubeletexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/kubelet/config/v1"
	"k8s.io/kubelet/pkg/apis/credentialprovider"
	"k8s.io/kubelet/pkg/apis/credentialprovider/install"
	credv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme, serializer.EnableStrict)
)

func init() {
	install.Install(scheme)
	if err := v1.AddToScheme(scheme); err != nil {
		panic(err)
	}
}

// LoadConfig reads a CredentialProviderConfig strictly (unknown fields are
// errors) and checks what the kubelet's validation checks of it.
func LoadConfig(path string) (*v1.CredentialProviderConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := &v1.CredentialProviderConfig{}
	if _, _, err := codecs.UniversalDecoder(v1.SchemeGroupVersion).Decode(b, nil, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cfg.Providers) == 0 {
		return nil, errors.New("no providers")
	}
	for _, p := range cfg.Providers {
		if err := checkProvider(p); err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
	}
	return cfg, nil
}

// checkProvider: the rules of the kubelet's validateCredentialProviderConfig.
func checkProvider(p v1.CredentialProvider) error {
	switch {
	case p.Name == "":
		return errors.New("no name")
	case len(p.MatchImages) == 0:
		return errors.New("no matchImages")
	case p.DefaultCacheDuration == nil || p.DefaultCacheDuration.Duration < 0:
		return errors.New("defaultCacheDuration must be set and not negative")
	case p.APIVersion != credv1.SchemeGroupVersion.String():
		return fmt.Errorf("apiVersion %q, want %s", p.APIVersion, credv1.SchemeGroupVersion)
	}
	if ta := p.TokenAttributes; ta != nil {
		switch {
		case ta.ServiceAccountTokenAudience == "":
			return errors.New("tokenAttributes.serviceAccountTokenAudience is empty")
		case ta.CacheType != v1.TokenServiceAccountTokenCacheType && ta.CacheType != v1.ServiceAccountServiceAccountTokenCacheType:
			return fmt.Errorf("tokenAttributes.cacheType %q, want Token or ServiceAccount", ta.CacheType)
		case ta.RequireServiceAccount == nil:
			return errors.New("tokenAttributes.requireServiceAccount must be set")
		case !*ta.RequireServiceAccount && len(ta.RequiredServiceAccountAnnotationKeys) > 0:
			return errors.New("requiredServiceAccountAnnotationKeys need requireServiceAccount: true")
		}
		for _, k := range ta.RequiredServiceAccountAnnotationKeys {
			if slices.Contains(ta.OptionalServiceAccountAnnotationKeys, k) {
				return fmt.Errorf("annotation key %q is both required and optional", k)
			}
		}
	}
	return nil
}

// Pod is what the kubelet knows of the pod that pulls: its service
// account's token (for the provider's audience) and annotations.
type Pod struct {
	ServiceAccountToken string
	Annotations         map[string]string
}

// Exec runs the provider binary for image as the kubelet does: env is the
// kubelet's own environment, to which the configuration's env is added.
// It returns the response, or an error with the provider's stderr.
func Exec(ctx context.Context, bin string, p v1.CredentialProvider, env []string, image string, pod *Pod) (*credentialprovider.CredentialProviderResponse, error) {
	req := &credv1.CredentialProviderRequest{Image: image}
	if pod != nil && p.TokenAttributes != nil {
		req.ServiceAccountToken = pod.ServiceAccountToken
		// Only the annotation keys the configuration names go through.
		keys := append(slices.Clone(p.TokenAttributes.RequiredServiceAccountAnnotationKeys), p.TokenAttributes.OptionalServiceAccountAnnotationKeys...)
		for _, k := range keys {
			if v, ok := pod.Annotations[k]; ok {
				if req.ServiceAccountAnnotations == nil {
					req.ServiceAccountAnnotations = map[string]string{}
				}
				req.ServiceAccountAnnotations[k] = v
			}
		}
	}
	enc := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{})
	in, err := runtime.Encode(codecs.EncoderForVersion(enc, credv1.SchemeGroupVersion), req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, p.Args...)
	cmd.Env = slices.Clone(env)
	for _, e := range p.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &ExecError{Err: err, Stderr: stderr.String()}
	}
	return DecodeResponse(stdout.Bytes())
}

// ExecError is a provider run that failed, with what it wrote on stderr.
type ExecError struct {
	Err    error
	Stderr string
}

func (e *ExecError) Error() string { return fmt.Sprintf("%v: %s", e.Err, e.Stderr) }

// DecodeResponse decodes and checks a provider's answer as the kubelet
// does: any of the credentialprovider versions, converted to the internal
// type, with a cache key type and a cache duration that is not negative.
func DecodeResponse(b []byte) (*credentialprovider.CredentialProviderResponse, error) {
	obj, gvk, err := codecs.UniversalDecoder().Decode(b, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("decoding the response: %w", err)
	}
	if gvk.Kind != "CredentialProviderResponse" || gvk.Group != credentialprovider.GroupName {
		return nil, fmt.Errorf("response is a %s", gvk)
	}
	resp := &credentialprovider.CredentialProviderResponse{}
	if err := scheme.Convert(obj, resp, nil); err != nil {
		return nil, err
	}
	if resp.CacheKeyType == "" {
		return nil, errors.New("response has no cacheKeyType")
	}
	if resp.CacheDuration != nil && resp.CacheDuration.Duration < 0 {
		return nil, errors.New("response has a negative cacheDuration")
	}
	return resp, nil
}
