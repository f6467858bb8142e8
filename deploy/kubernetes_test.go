package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifests are the objects of deploy/kubernetes, decoded strictly into the Kubernetes
// API types: an unknown field (a typo, a wrong nesting) or a wrong type fails, which is
// what `kubectl apply --validate=strict` checks against the server's OpenAPI schema.
type manifests struct {
	files      map[string][]byte // file name -> content
	deployment *appsv1.Deployment
	service    *corev1.Service
	pdb        *policyv1.PodDisruptionBudget
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	configMap  *corev1.ConfigMap
	secret     *corev1.Secret
	names      []string // kind/name of every object, sorted
}

const kubeDir = "kubernetes"

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})

	m := &manifests{files: map[string][]byte{}}
	paths, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		m.files[name] = b
		if name == "kustomization.yaml" {
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for doc := 1; ; doc++ {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(bytes.TrimSpace(stripComments(raw))) == 0 {
				continue
			}
			obj, gvk, err := strict.Decode(raw, nil, nil)
			if err != nil {
				t.Errorf("%s document %d: %v", name, doc, err)
				continue
			}
			var objName string
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployment, objName = once(t, m.deployment, o), o.Name
			case *corev1.Service:
				m.service, objName = once(t, m.service, o), o.Name
			case *policyv1.PodDisruptionBudget:
				m.pdb, objName = once(t, m.pdb, o), o.Name
			case *autoscalingv2.HorizontalPodAutoscaler:
				m.hpa, objName = once(t, m.hpa, o), o.Name
			case *corev1.ConfigMap:
				m.configMap, objName = once(t, m.configMap, o), o.Name
			case *corev1.Secret:
				m.secret, objName = once(t, m.secret, o), o.Name
			default:
				t.Errorf("%s document %d: %s is not one this test checks", name, doc, gvk)
				continue
			}
			m.names = append(m.names, gvk.Kind+"/"+objName)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for what, missing := range map[string]bool{
		"Deployment": m.deployment == nil, "Service": m.service == nil, "PodDisruptionBudget": m.pdb == nil,
		"HorizontalPodAutoscaler": m.hpa == nil, "ConfigMap": m.configMap == nil, "Secret": m.secret == nil,
	} {
		if missing {
			t.Errorf("no %s in %s/", what, kubeDir)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	sort.Strings(m.names)
	return m
}

func once[T any](t *testing.T, have *T, got *T) *T {
	t.Helper()
	if have != nil {
		t.Errorf("more than one %T", got)
	}
	return got
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func TestKubernetesKustomizationListsEveryManifest(t *testing.T) {
	m := loadManifests(t)
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(m.files["kustomization.yaml"], &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var files []string
	for f := range m.files {
		if f != "kustomization.yaml" {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	sort.Strings(k.Resources)
	if strings.Join(files, ",") != strings.Join(k.Resources, ",") {
		t.Errorf("kustomization.yaml resources %v, want every manifest %v", k.Resources, files)
	}
}

// TestKubernetesKubectl runs kubectl where it works without a cluster. `kubectl apply
// --dry-run=client` does not: it still asks an API server for the resource mapping
// (without one it dials localhost:8080), so the schema check is the strict decoding of
// loadManifests and kubectl renders the kustomization and parses every object.
func TestKubernetesKubectl(t *testing.T) {
	m := loadManifests(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl not found: run scripts/ops-deps (installs Debian's kubernetes-client)")
	}
	// A kubeconfig that points nowhere reachable: nothing here may talk to a cluster
	// (kubectl's default, localhost:8080, is the gateway's port). It has a token so that
	// older kubectl releases (Debian's 1.20) do not prompt for a user name.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	rendered := run("kustomize", kubeDir)
	rendFile := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(rendFile, rendered, 0o600); err != nil {
		t.Fatal(err)
	}
	// --local: kubectl decodes every object itself and contacts no server.
	out := run("label", "--local", "-o", "name", "-f", rendFile, "deploy-test=ok")
	var got []string
	for _, l := range strings.Fields(string(out)) {
		kind, name, _ := strings.Cut(l, "/")
		kind, _, _ = strings.Cut(kind, ".")
		got = append(got, kind+"/"+name)
	}
	var want []string
	for _, n := range m.names {
		kind, name, _ := strings.Cut(n, "/")
		want = append(want, strings.ToLower(kind)+"/"+name)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("kubectl read %v, want %v", got, want)
	}
}

func gatewayContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "sse-gateway" {
			return c
		}
	}
	t.Fatal("Deployment has no container named sse-gateway")
	return nil
}

// podEnv resolves the gateway container's environment as the kubelet would: envFrom
// ConfigMaps, then env (value, secretKeyRef, configMapKeyRef). resourceFieldRef values
// are left out.
func podEnv(t *testing.T, m *manifests) map[string]string {
	t.Helper()
	c := gatewayContainer(t, m.deployment)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil && from.ConfigMapRef.Name == m.configMap.Name:
			for k, v := range m.configMap.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil && from.SecretRef.Name == m.secret.Name:
			for k, v := range m.secret.StringData {
				env[from.Prefix+k] = v
			}
		default:
			t.Errorf("envFrom %+v names no ConfigMap or Secret of %s/", from, kubeDir)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := m.secret.StringData[ref.Key]
			if ref.Name != m.secret.Name || !ok {
				t.Errorf("env %s: secret %s key %s is not in secret.yaml", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := m.configMap.Data[ref.Key]
			if ref.Name != m.configMap.Name || !ok {
				t.Errorf("env %s: configmap %s key %s is not in configmap.yaml", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ResourceFieldRef != nil:
		default:
			t.Errorf("env %s: valueFrom %+v not checked by this test", e.Name, e.ValueFrom)
		}
	}
	return env
}

// flagDuration returns a duration setting from the pod's environment, or the flag's
// default when the pod does not set it.
func flagDuration(t *testing.T, env map[string]string, flag string) time.Duration {
	t.Helper()
	name := envName(flag)
	v, ok := env[name]
	if !ok {
		v = gatewayFlags(t)[flag]
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envName(flag string) string {
	return "SSE_GATEWAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func TestKubernetesDeployment(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	pod := d.Spec.Template.Spec
	c := gatewayContainer(t, d)

	// Probes on the contract's paths, on the streams port.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 8080 || ports["metrics"] != 9090 {
		t.Errorf("container ports %v, want http 8080 and metrics 9090", ports)
	}
	probe := func(what string, p *corev1.Probe, wantPath string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet on %s", what, wantPath)
			return
		}
		if p.HTTPGet.Path != wantPath {
			t.Errorf("%s probe path %s, want %s", what, p.HTTPGet.Path, wantPath)
		}
		if port := resolvePort(p.HTTPGet.Port, ports); port != 8080 {
			t.Errorf("%s probe port %s resolves to %d, want 8080 (SSE_GATEWAY_ADDR)", what, p.HTTPGet.Port.String(), port)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")
	if c.StartupProbe != nil {
		probe("startup", c.StartupProbe, "/healthz")
	}

	// Shutdown: grace period covers preStop, drain and the last writes' timeout.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatal("no preStop hook: the load balancer may still route new streams to a draining pod")
	}
	var preStop time.Duration
	switch h := c.Lifecycle.PreStop; {
	case h.Sleep != nil:
		preStop = time.Duration(h.Sleep.Seconds) * time.Second
	case h.Exec != nil:
		t.Fatalf("preStop exec %v: the image has no shell or sleep binary; use the sleep action", h.Exec.Command)
	default:
		t.Fatalf("preStop %+v: want a sleep", h)
	}
	if preStop < 5*time.Second {
		t.Errorf("preStop sleeps %v: too short for endpoints to propagate", preStop)
	}
	env := podEnv(t, m)
	drain := flagDuration(t, env, "drain")
	writeTimeout := flagDuration(t, env, "write-timeout")
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds unset (30s default); set it explicitly")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= preStop+drain+writeTimeout {
		t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + drain %v + write timeout %v: SIGKILL would cut the drain short",
			grace, preStop, drain, writeTimeout)
	}

	// Every SSE_GATEWAY_* variable is a real flag, with a value of the right kind.
	flags := gatewayFlags(t)
	var unknown []string
	for k, v := range env {
		name, ok := strings.CutPrefix(k, "SSE_GATEWAY_")
		if !ok {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		def, known := flags[flag]
		if !known {
			unknown = append(unknown, k)
			continue
		}
		if _, err := time.ParseDuration(def); err == nil {
			if _, err := time.ParseDuration(v); err != nil {
				t.Errorf("%s=%q: not a duration (default %s)", k, v, def)
			}
		}
		if _, err := strconv.Atoi(def); err == nil {
			if _, err := strconv.Atoi(v); err != nil {
				t.Errorf("%s=%q: not an integer (default %s)", k, v, def)
			}
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("environment sets %v, which name no serve flag", unknown)
	}
	for _, want := range []string{"SSE_GATEWAY_REDIS_URL", "SSE_GATEWAY_ADMIN_TOKEN", "SSE_GATEWAY_KEYS_FILE", "SSE_GATEWAY_METRICS_ADDR"} {
		if _, ok := env[want]; !ok {
			t.Errorf("container does not set %s", want)
		}
	}
	for _, secret := range []string{"SSE_GATEWAY_REDIS_URL", "SSE_GATEWAY_ADMIN_TOKEN"} {
		if _, ok := m.configMap.Data[secret]; ok {
			t.Errorf("%s is in the ConfigMap: it belongs in the Secret", secret)
		}
		for _, e := range c.Env {
			if e.Name == secret && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Errorf("%s is not read from a Secret", secret)
			}
		}
	}
	// The keys file is mounted from the Secret where SSE_GATEWAY_KEYS_FILE points.
	keysFile := env["SSE_GATEWAY_KEYS_FILE"]
	mounted := false
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(keysFile, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.Secret == nil || v.Secret.SecretName != m.secret.Name {
				continue
			}
			if vm.SubPath != "" {
				t.Errorf("keys volume mounted with subPath: the file would never see Secret updates")
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					if _, ok := m.secret.StringData[it.Key]; !ok {
						t.Errorf("keys volume item key %s not in the Secret", it.Key)
					}
					mounted = true
				}
			}
			if len(v.Secret.Items) == 0 {
				_, mounted = m.secret.StringData[rel]
			}
		}
	}
	if !mounted {
		t.Errorf("SSE_GATEWAY_KEYS_FILE=%s is not a file of a mounted volume of Secret %s", keysFile, m.secret.Name)
	}

	// Resources.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request (the HPA's CPU utilisation is relative to it)", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}

	// Non-root, read-only, no privileges; the UID is the image's.
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if sc == nil {
		t.Fatal("container has no securityContext")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Error("capabilities are not drop [ALL]")
	}
	df, err := parseDockerfileFile(filepath.Join(repoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	user, _ := df.final().last("USER")
	uid := strings.SplitN(strings.TrimSpace(user.args), ":", 2)[0]
	if psc != nil && (psc.RunAsUser == nil || strconv.FormatInt(*psc.RunAsUser, 10) != uid) {
		t.Errorf("pod runAsUser %v, want the image's USER %s", psc.RunAsUser, uid)
	}
	if len(c.Args) > 0 && c.Args[0] != "serve" {
		t.Errorf("container args %v: want serve", c.Args)
	}
}

func resolvePort(p intstr.IntOrString, named map[string]int32) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return named[p.StrVal]
}

func TestKubernetesSelectorsAndTargets(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	podLabels := labels.Set(d.Spec.Template.Labels)

	sel := func(what string, ls map[string]string) {
		t.Helper()
		if len(ls) == 0 {
			t.Errorf("%s has an empty selector", what)
			return
		}
		if !labels.SelectorFromSet(ls).Matches(podLabels) {
			t.Errorf("%s selector %v does not match the pod labels %v", what, ls, podLabels)
		}
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchExpressions) > 0 {
		t.Fatal("Deployment selector: want matchLabels only")
	}
	sel("Deployment", d.Spec.Selector.MatchLabels)
	sel("Service", m.service.Spec.Selector)
	if m.pdb.Spec.Selector == nil || len(m.pdb.Spec.Selector.MatchExpressions) > 0 {
		t.Fatal("PodDisruptionBudget selector: want matchLabels only")
	}
	sel("PodDisruptionBudget", m.pdb.Spec.Selector.MatchLabels)
	if fmt.Sprint(m.pdb.Spec.Selector.MatchLabels) != fmt.Sprint(d.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget selector %v != Deployment selector %v", m.pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels)
	}
	for i, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		if tsc.LabelSelector == nil {
			t.Errorf("topologySpreadConstraints[%d] has no labelSelector", i)
			continue
		}
		sel(fmt.Sprintf("topologySpreadConstraints[%d]", i), tsc.LabelSelector.MatchLabels)
	}

	// The Service reaches the streams port, not metrics.
	c := gatewayContainer(t, d)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, sp := range m.service.Spec.Ports {
		switch resolvePort(sp.TargetPort, ports) {
		case 8080:
		case 9090:
			t.Errorf("Service port %s exposes the metrics listener", sp.Name)
		default:
			t.Errorf("Service port %s targets %s, which is no container port", sp.Name, sp.TargetPort.String())
		}
	}
	// The pod's scrape annotation names the metrics port.
	if p := d.Spec.Template.Annotations["prometheus.io/port"]; p != strconv.Itoa(int(ports["metrics"])) {
		t.Errorf("prometheus.io/port annotation %q, want the metrics port %d", p, ports["metrics"])
	}

	// HPA scales this Deployment and never below what the PDB needs to allow a drain.
	ref := m.hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HPA scaleTargetRef %+v, want apps/v1 Deployment %s", ref, d.Name)
	}
	minReplicas := int32(1)
	if m.hpa.Spec.MinReplicas != nil {
		minReplicas = *m.hpa.Spec.MinReplicas
	}
	if minReplicas < 2 {
		t.Errorf("HPA minReplicas %d: want at least 2 so one pod can drain while another serves", minReplicas)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < minReplicas || *d.Spec.Replicas > m.hpa.Spec.MaxReplicas {
		t.Errorf("Deployment replicas %v outside the HPA's [%d, %d]", d.Spec.Replicas, minReplicas, m.hpa.Spec.MaxReplicas)
	}
	if mu := m.pdb.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal < 1 || mu.IntVal >= minReplicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %v: want an integer in [1, minReplicas)", mu)
	}
	cpu := false
	for _, mt := range m.hpa.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU {
			cpu = true
		}
	}
	if !cpu {
		t.Error("HPA has no CPU metric")
	}
	if !regexp.MustCompile(`(?m)^\s*#\s+name: sse_gateway_streams_open$`).Match(m.files["hpa.yaml"]) {
		t.Error("hpa.yaml lacks the commented-out Pods metric on sse_gateway_streams_open")
	}
	if sd := m.hpa.Spec.Behavior; sd == nil || sd.ScaleDown == nil || sd.ScaleDown.StabilizationWindowSeconds == nil ||
		*sd.ScaleDown.StabilizationWindowSeconds < 300 {
		t.Error("HPA scale-down stabilization window < 300s: every scale-down sends a pod's streams reconnecting")
	}

	// Everything carries the same app labels.
	for name, meta := range map[string]map[string]string{
		"Deployment": d.Labels, "Service": m.service.Labels, "PodDisruptionBudget": m.pdb.Labels,
		"HorizontalPodAutoscaler": m.hpa.Labels, "ConfigMap": m.configMap.Labels, "Secret": m.secret.Labels,
	} {
		for k, v := range d.Spec.Selector.MatchLabels {
			if meta[k] != v {
				t.Errorf("%s label %s=%q, want %q", name, k, meta[k], v)
			}
		}
	}
}
