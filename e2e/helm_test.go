//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/vault-registry/vault-plugin-registry/relay"
)

// deploy/helm/godoauth-relay without a cluster: helm lint, helm template
// with the default values and with each option, every rendered manifest
// decoded strictly into the Kubernetes API's Go types (k8s.io/api: an
// unknown or misspelt field fails) and checked for what the chart
// promises; the rendered container run by a test dockerd as the kubelet
// would run it.

const chartDir = "../deploy/helm/godoauth-relay"

// chartOptions are the value sets the tests render: the defaults and each
// option.
var chartOptions = map[string][]string{
	"defaults":                 nil,
	"kubernetes login":         {"vault.login.mode=kubernetes", "vault.login.kubernetes.role=relay", "vault.login.kubernetes.audience=vault-relay"},
	"approle login":            {"vault.login.mode=approle", "vault.login.approle.roleID=0b8c-role", "vault.login.approle.existingSecret=relay-approle"},
	"token login":              {"vault.login.mode=token", "vault.login.token.existingSecret=relay-token"},
	"vault CA":                 {"vault.caSecret.name=vault-ca"},
	"ingress":                  {"ingress.enabled=true", "ingress.className=nginx", "ingress.tls[0].secretName=auth-tls", "ingress.tls[0].hosts[0]=registry-auth.example.com"},
	"metrics":                  {"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=kube-prometheus"},
	"no PDB":                   {"podDisruptionBudget.enabled=false"},
	"existing service account": {"serviceAccount.create=false", "serviceAccount.name=relay"},
}

// rendered is one `helm template` output, by kind.
type rendered struct {
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	ConfigMap      *corev1.ConfigMap
	ServiceAccount *corev1.ServiceAccount
	PDB            *policyv1.PodDisruptionBudget
	Ingress        *networkingv1.Ingress
	ServiceMonitor map[string]any
	PrometheusRule map[string]any
	kinds          []string
}

// helmTemplate renders the chart with --set values; it fails the test
// unless helm succeeds and every document decodes strictly.
func helmTemplate(t *testing.T, sets ...string) *rendered {
	t.Helper()
	r := helm(t, append([]string{"template", "rel", chartDir, "--namespace", "registry"}, setArgs(sets)...)...)
	mustOK(t, r)
	return decodeManifests(t, r.Stdout)
}

func setArgs(sets []string) []string {
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

func helm(t testing.TB, args ...string) Result {
	t.Helper()
	home := t.TempDir()
	env := append(baseEnv(home), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	return RunCommand(t, env, "", "", tool(t, "helm"), args...)
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func decodeManifests(t *testing.T, out string) *rendered {
	t.Helper()
	m := &rendered{}
	for _, doc := range docSeparator.Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil || head.Kind == "" || head.APIVersion == "" {
			t.Fatalf("a rendered document without apiVersion and kind (%v):\n%s", err, doc)
		}
		m.kinds = append(m.kinds, head.Kind)
		// Each kind's place in m: a pointer the decoder fills (a nil
		// *T field gets a new T).
		target, ok := map[string]any{
			"apps/v1 Deployment":                      &m.Deployment,
			"v1 Service":                              &m.Service,
			"v1 ConfigMap":                            &m.ConfigMap,
			"v1 ServiceAccount":                       &m.ServiceAccount,
			"policy/v1 PodDisruptionBudget":           &m.PDB,
			"networking.k8s.io/v1 Ingress":            &m.Ingress,
			"monitoring.coreos.com/v1 ServiceMonitor": &m.ServiceMonitor,
			"monitoring.coreos.com/v1 PrometheusRule": &m.PrometheusRule,
		}[head.APIVersion+" "+head.Kind]
		if !ok {
			t.Fatalf("unexpected %s %s", head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Fatalf("%s does not decode strictly into the API's type: %v\n%s", head.Kind, err, doc)
		}
	}
	return m
}

func stripComments(doc string) string {
	var lines []string
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestHelm_lintAndTemplateEachOption: helm lint --strict and helm template
// with the default values and each option; the manifests decode strictly
// into the API's types and hold what the chart promises.
func TestHelm_lintAndTemplateEachOption(t *testing.T) {
	chart := readFileString(t, filepath.Join(chartDir, "Chart.yaml"))
	makefile := readFileString(t, "../Makefile")
	// The release a work tree builds: the Makefile's DEFAULT_VERSION (a
	// tag's build takes the tag).
	version := regexp.MustCompile(`(?m)^DEFAULT_VERSION\s*:?=\s*(\S+)$`).FindStringSubmatch(makefile)
	if version == nil {
		t.Fatal("the Makefile sets no DEFAULT_VERSION")
	}
	if !strings.Contains(chart, "appVersion: \""+version[1]+"\"") || !strings.Contains(chart, "apiVersion: v2") {
		t.Errorf("Chart.yaml: want apiVersion v2 and appVersion %q, the Makefile's DEFAULT_VERSION", version[1])
	}
	// The PrometheusRule is built from deploy/prometheus's rules.
	if a, b := readFileString(t, "../deploy/prometheus/godoauth-relay.rules.yml"), readFileString(t, filepath.Join(chartDir, "files", "godoauth-relay.rules.yml")); a != b {
		t.Error("the chart's files/godoauth-relay.rules.yml differs from deploy/prometheus/godoauth-relay.rules.yml: copy it")
	}

	for name, sets := range chartOptions {
		t.Run(name, func(t *testing.T) {
			if r := helm(t, append([]string{"lint", "--strict", chartDir}, setArgs(sets)...)...); !r.OK() || !strings.Contains(r.Stdout, "0 chart(s) failed") {
				t.Fatalf("helm lint: %v", r)
			}
			m := helmTemplate(t, sets...)
			checkDeployment(t, m, version[1])
			checkOption(t, name, m)
		})
	}

	t.Run("wrong values fail with the reason", func(t *testing.T) {
		for reason, sets := range map[string][]string{
			"vault.login.mode: want agent":                   {"vault.login.mode=vault-token"},
			"vault.login.approle.existingSecret is required": {"vault.login.mode=approle", "vault.login.approle.roleID=x"},
			"vault.login.token.existingSecret is required":   {"vault.login.mode=token"},
			"config.storage.vault.auth_token":                {"config.storage.vault.auth_token=hvs.in-a-configmap"},
		} {
			r := helm(t, append([]string{"template", "rel", chartDir}, setArgs(sets)...)...)
			mustFailWith(t, strings.Join(sets, " "), r, reason)
		}
	})
}

// checkDeployment: what every rendering holds.
func checkDeployment(t *testing.T, m *rendered, appVersion string) {
	t.Helper()
	for _, kind := range []string{"Deployment", "Service", "ConfigMap"} {
		if !slices.Contains(m.kinds, kind) {
			t.Fatalf("no %s rendered (got %v)", kind, m.kinds)
		}
	}
	d := m.Deployment
	pod := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 || len(pod.Containers) != 1 {
		t.Fatalf("want 2 replicas of one container, got %v and %d", d.Spec.Replicas, len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.HasSuffix(c.Image, ":"+appVersion) {
		t.Errorf("image %q, want the tag %s", c.Image, appVersion)
	}
	sc, psc := c.SecurityContext, pod.SecurityContext
	if sc == nil || psc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("security context %+v / pod %+v: want uid 65532, non-root, read-only root, no capabilities, no privilege escalation", sc, psc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/livez" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes %+v / %+v: want liveness on /livez and readiness on /healthz", c.LivenessProbe, c.ReadinessProbe)
	}
	// Selectors: the Deployment's, the Service's and the PDB's pick the pods.
	labels := d.Spec.Template.Labels
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels) || !selects(m.Service.Spec.Selector) {
		t.Errorf("selectors do not pick the pod labels %v", labels)
	}
	if m.PDB != nil && (m.PDB.Spec.Selector == nil || !selects(m.PDB.Spec.Selector.MatchLabels)) {
		t.Errorf("the PodDisruptionBudget does not select the pods")
	}
	if len(m.Service.Spec.Ports) != 1 || m.Service.Spec.Ports[0].TargetPort.String() != "http" || len(c.Ports) != 1 || c.Ports[0].Name != "http" {
		t.Errorf("the Service's port does not reach the container's port http")
	}
	// Every mount names a volume; the ConfigMap is the one the pod mounts.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		if _, ok := volumes[vm.Name]; !ok || !vm.ReadOnly {
			t.Errorf("mount %s: want a read-only mount of a volume of the pod", vm.Name)
		}
	}
	if cm := volumes["config"].ConfigMap; cm == nil || cm.Name != m.ConfigMap.Name {
		t.Errorf("the pod does not mount the ConfigMap %s", m.ConfigMap.Name)
	}
	if got := pod.ServiceAccountName; m.ServiceAccount != nil && got != m.ServiceAccount.Name {
		t.Errorf("the pod runs as service account %q, the chart made %q", got, m.ServiceAccount.Name)
	}
}

// relayConfigOf reads the ConfigMap's config.yml with the relay's own
// strict loader (unknown keys fail), with VAULT_ADDR from the container.
func relayConfigOf(t *testing.T, m *rendered) *relay.Config {
	t.Helper()
	text, ok := m.ConfigMap.Data["config.yml"]
	if !ok {
		t.Fatal("the ConfigMap has no config.yml")
	}
	p := filepath.Join(t.TempDir(), "config.yml")
	mustWrite(t, p, []byte(text))
	env := map[string]string{}
	for _, e := range m.Deployment.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	cfg, err := relay.LoadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the relay refuses the ConfigMap's config.yml: %v\n%s", err, text)
	}
	return cfg
}

// checkOption: what each option adds.
func checkOption(t *testing.T, name string, m *rendered) {
	t.Helper()
	pod := m.Deployment.Spec.Template.Spec
	c := pod.Containers[0]
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	ann := m.Deployment.Spec.Template.Annotations
	automount := pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken
	switch name {
	case "defaults":
		cfg := relayConfigOf(t, m)
		if cfg.Storage.Vault.AuthTokenFile != "/vault/secrets/token" || ann["vault.hashicorp.com/agent-inject"] != "true" ||
			ann["vault.hashicorp.com/agent-inject-token"] != "true" || ann["vault.hashicorp.com/role"] != "godoauth-relay" || !automount {
			t.Errorf("agent mode: token file %q, annotations %v, automount %v", cfg.Storage.Vault.AuthTokenFile, ann, automount)
		}
		if cfg.HTTP.Addr != ":5002" || m.PDB == nil || m.Ingress != nil || m.ServiceMonitor != nil || m.PrometheusRule != nil {
			t.Errorf("defaults: http.addr %q, PDB %v, and no Ingress nor monitoring objects", cfg.HTTP.Addr, m.PDB != nil)
		}
	case "kubernetes login":
		k := relayConfigOf(t, m).Storage.Vault.Kubernetes
		if k.Role != "relay" || k.Mount != "kubernetes" || k.TokenFile != "/var/run/secrets/vault/token" {
			t.Errorf("storage.vault.kubernetes %+v", k)
		}
		v := pod.Volumes[slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "vault-sa-token" })]
		if v.Projected == nil || v.Projected.Sources[0].ServiceAccountToken.Audience != "vault-relay" || mounts["vault-sa-token"] != "/var/run/secrets/vault" || automount {
			t.Errorf("kubernetes mode: want a projected token of audience vault-relay at /var/run/secrets/vault and no default token, got %+v", v)
		}
	case "approle login":
		cfg := relayConfigOf(t, m)
		a := cfg.Storage.Vault.AppRole
		if a.RoleID != "0b8c-role" || a.SecretIDFile != mounts["vault-approle"]+"/secret-id" || automount {
			t.Errorf("approle: %+v, mounts %v", a, mounts)
		}
	case "token login":
		cfg := relayConfigOf(t, m)
		if cfg.Storage.Vault.AuthTokenFile != mounts["vault-token"]+"/token" || cfg.Storage.Vault.AuthToken != "" {
			t.Errorf("token: file %q, mounts %v", cfg.Storage.Vault.AuthTokenFile, mounts)
		}
	case "vault CA":
		cfg := relayConfigOf(t, m)
		if cfg.Storage.Vault.CACert != mounts["vault-ca"]+"/ca.crt" {
			t.Errorf("VAULT_CACERT %q, mounts %v", cfg.Storage.Vault.CACert, mounts)
		}
	case "ingress":
		in := m.Ingress
		if in == nil || *in.Spec.IngressClassName != "nginx" || len(in.Spec.TLS) != 1 || in.Spec.Rules[0].Host != "registry-auth.example.com" ||
			in.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name != m.Service.Name {
			t.Errorf("ingress %+v", in)
		}
	case "metrics":
		checkMonitoring(t, m)
	case "no PDB":
		if m.PDB != nil {
			t.Error("a PodDisruptionBudget with podDisruptionBudget.enabled=false")
		}
	case "existing service account":
		if m.ServiceAccount != nil || pod.ServiceAccountName != "relay" {
			t.Errorf("service account: made %v, pod uses %q", m.ServiceAccount != nil, pod.ServiceAccountName)
		}
	}
}

// checkMonitoring: the ServiceMonitor scrapes the Service's port, and the
// PrometheusRule's groups pass `promtool check rules`.
func checkMonitoring(t *testing.T, m *rendered) {
	t.Helper()
	if m.ServiceMonitor == nil || m.PrometheusRule == nil {
		t.Fatal("want a ServiceMonitor and a PrometheusRule")
	}
	sm, _ := m.ServiceMonitor["spec"].(map[string]any)
	eps, _ := sm["endpoints"].([]any)
	ep, _ := eps[0].(map[string]any)
	if ep["port"] != "http" || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %v", eps)
	}
	meta, _ := m.PrometheusRule["metadata"].(map[string]any)
	if labels, _ := meta["labels"].(map[string]any); labels["release"] != "kube-prometheus" {
		t.Errorf("PrometheusRule labels %v, want release=kube-prometheus", labels)
	}
	spec, _ := m.PrometheusRule["spec"].(map[string]any)
	b, err := yaml.Marshal(map[string]any{"groups": spec["groups"]})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rules.yml")
	mustWrite(t, p, b)
	r := RunCommand(t, baseEnv(t.TempDir()), "", "", tool(t, "promtool"), "check", "rules", p)
	want := strings.Count(readFileString(t, "../deploy/prometheus/godoauth-relay.rules.yml"), "- alert:")
	if !r.OK() || !strings.Contains(r.Stdout, fmt.Sprintf("SUCCESS: %d rules found", want)) {
		t.Errorf("promtool check rules on the PrometheusRule's groups (want %d rules): %v", want, r)
	}
}

// TestHelm_renderedContainerAnswersAuth: the container the chart renders
// (image, args, env, mounts, user, read-only root, no capabilities),
// started by a test dockerd as the kubelet would start it, with the
// volumes' contents as Kubernetes would project them: its probes answer
// and it mints a token against the test's Vault. The default login (the
// Vault Agent injector's token file, here written as the injector would),
// AppRole (the secret_id from the Secret the chart mounts) and the relay's
// own Kubernetes login (a projected token signed here, Vault's jwt auth at
// "kubernetes").
func TestHelm_renderedContainerAnswersAuth(t *testing.T) {
	cli := buildRelayImage(t)
	st := NewStack(t, "registry")
	v := st.Vault
	st.Services["registry"].WriteUser(t, "alice", "alice-pw-4e1d", "repository:k8s/app:pull")
	relayToken := v.RelayToken(t, "registry") // also writes the policy registry-relay-registry
	v.CLI(t, "auth", "enable", "approle")
	v.root(t, http.MethodPut, "auth/approle/role/godoauth-relay", map[string]any{"token_policies": "registry-relay-registry", "token_ttl": "1h"})
	roleID := jsonField(v.root(t, http.MethodGet, "auth/approle/role/godoauth-relay/role-id", nil), "data", "role_id")
	secretID := jsonField(v.root(t, http.MethodPost, "auth/approle/role/godoauth-relay/secret-id", nil), "data", "secret_id")
	// The kubernetes mode: Vault's jwt auth at "kubernetes" checks the
	// projected token, signed here as the API server would sign it.
	issuer := newSAIssuer(t)
	relaySA := serviceAccount{namespace: "registry", name: "rel-godoauth-relay"}
	v.CLI(t, "auth", "enable", "-path=kubernetes", "jwt")
	v.root(t, http.MethodPut, "auth/kubernetes/config", map[string]any{"jwt_validation_pubkeys": []string{issuer.publicPEM(t)}, "bound_issuer": saIssuer})
	v.root(t, http.MethodPut, "auth/kubernetes/role/godoauth-relay", map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_subject": relaySA.subject(), "bound_audiences": []string{"vault"},
		"token_policies": "registry-relay-registry", "token_ttl": "1h",
	})

	for _, mode := range []struct {
		name string
		sets []string
		// files are what Kubernetes (or the injector) puts in the pod,
		// by path in the container.
		files func(m *rendered) map[string]string
	}{
		{"agent", nil, func(*rendered) map[string]string {
			return map[string]string{"/vault/secrets/token": relayToken + "\n"}
		}},
		{"approle", []string{"vault.login.mode=approle", "vault.login.approle.roleID=" + roleID, "vault.login.approle.existingSecret=relay-approle"},
			func(m *rendered) map[string]string {
				return map[string]string{secretMount(t, m, "relay-approle") + "/secret-id": secretID + "\n"}
			}},
		{"kubernetes", []string{"vault.login.mode=kubernetes"}, func(m *rendered) map[string]string {
			// The projected volume, with the audience the chart asks for.
			pod := m.Deployment.Spec.Template.Spec
			i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "vault-sa-token" })
			if i < 0 || pod.ServiceAccountName != relaySA.name {
				t.Fatalf("kubernetes mode: no projected token volume, or service account %q", pod.ServiceAccountName)
			}
			src := pod.Volumes[i].Projected.Sources[0].ServiceAccountToken
			return map[string]string{"/var/run/secrets/vault/" + src.Path: issuer.token(t, relaySA, src.Audience, time.Now().Add(time.Hour))}
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			port := freePort(t)
			sets := append([]string{"image.repository=godoauth-relay", "image.tag=e2e", fmt.Sprintf("containerPort=%d", port),
				"vault.address=" + v.Addr}, mode.sets...)
			m := helmTemplate(t, sets...)
			name := "relay-" + mode.name
			args := dockerRunArgs(t, m, name, mode.files(m))
			if r := cli.classic(args...); !r.OK() {
				t.Fatalf("docker run: %v", r)
			}
			t.Cleanup(func() { cli.classic("rm", "-f", name) })
			c := m.Deployment.Spec.Template.Spec.Containers[0]
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			waitFor(t, "the readiness probe", cli.daemon.Proc, startTimeout, func() error {
				if err := wantStatus(base+c.ReadinessProbe.HTTPGet.Path, http.StatusOK); err != nil {
					return fmt.Errorf("%v; logs: %s", err, cli.classic("logs", name).Stderr)
				}
				return nil
			})
			if err := wantStatus(base+c.LivenessProbe.HTTPGet.Path, http.StatusOK); err != nil {
				t.Errorf("liveness probe: %v", err)
			}
			code, _, body := httpGet(t, base+"/auth?service=registry&scope=repository:k8s/app:pull", "alice", "alice-pw-4e1d")
			if code != http.StatusOK || !bytes.Contains(body, []byte(`"token"`)) {
				t.Fatalf("/auth from the chart's container: %d %s", code, truncate(body, 300))
			}
			if top := cli.classic("top", name, "-o", "pid,uid,args"); !strings.Contains(top.Stdout, "65532") {
				t.Errorf("the relay does not run as uid 65532: %v", top)
			}
		})
	}
}

// secretMount is where the pod mounts the Secret named secret.
func secretMount(t *testing.T, m *rendered, secret string) string {
	t.Helper()
	pod := m.Deployment.Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret {
			for _, vm := range pod.Containers[0].VolumeMounts {
				if vm.Name == v.Name {
					return vm.MountPath
				}
			}
		}
	}
	t.Fatalf("the pod does not mount the Secret %s", secret)
	return ""
}

// dockerRunArgs turns the rendered pod into `docker run` arguments, as the
// kubelet runs the container: its image, args, env, user, read-only root,
// capabilities and mounts (the ConfigMap's data as files, and the given
// files, e.g. a Secret's or the injector's), on the host's network.
func dockerRunArgs(t *testing.T, m *rendered, name string, files map[string]string) []string {
	t.Helper()
	pod := m.Deployment.Spec.Template.Spec
	c := pod.Containers[0]
	sc := c.SecurityContext
	args := []string{"run", "-d", "--name", name, "--network", "host",
		"--user", fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup)}
	if *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	if !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	for _, cp := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", string(cp))
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s comes from %v: not run here", e.Name, e.ValueFrom)
		}
		args = append(args, "-e", e.Name+"="+e.Value)
	}
	// Volumes: the ConfigMap's data, the files given, by mount.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	root := t.TempDir()
	dirs := map[string]string{} // mount path → host directory
	for _, vm := range c.VolumeMounts {
		dir := filepath.Join(root, vm.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if v := volumes[vm.Name]; v.ConfigMap != nil {
			for k, text := range m.ConfigMap.Data {
				mustWrite(t, filepath.Join(dir, k), []byte(text))
			}
		}
		dirs[vm.MountPath] = dir
	}
	for path, content := range files {
		dir, ok := dirs[filepath.Dir(path)]
		if !ok { // not a volume of the chart: one the injector adds
			dir = filepath.Join(root, "injected"+strings.ReplaceAll(filepath.Dir(path), "/", "-"))
			dirs[filepath.Dir(path)] = dir
		}
		mustWrite(t, filepath.Join(dir, filepath.Base(path)), []byte(content))
	}
	for mountPath, dir := range dirs {
		// Kubernetes makes volume files readable by the pod's fsGroup; the
		// test's are readable by all.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-v", dir+":"+mountPath+":ro")
	}
	if c.Image != relayImageTag {
		t.Fatalf("the chart renders image %q, want %q (image.repository and image.tag are set)", c.Image, relayImageTag)
	}
	return append(append(args, c.Image), c.Args...)
}
