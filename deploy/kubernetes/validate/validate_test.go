// Package validate checks the Kubernetes manifests in deploy/kubernetes
// without a cluster: each document is decoded strictly (unknown or
// duplicate fields are errors) into the real Kubernetes API types, and the
// properties Errand relies on are checked on the decoded objects. It is a
// module of its own so that the Kubernetes API modules stay out of
// Errand's go.mod.
package validate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// decode strictly decodes every YAML document of a manifest.
func decode(raw []byte) ([]runtime.Object, error) {
	var objs []runtime.Object
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj, _, err := decoder.Decode(js, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// manifests decodes every manifest in deploy/kubernetes, by kind and name.
func manifests(t *testing.T) map[string]runtime.Object {
	t.Helper()
	files, err := filepath.Glob("../*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]runtime.Object{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decode(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			kind := o.GetObjectKind().GroupVersionKind().Kind
			name := o.(interface{ GetName() string }).GetName()
			if _, dup := out[kind+"/"+name]; dup {
				t.Fatalf("%s: %s/%s defined twice", f, kind, name)
			}
			out[kind+"/"+name] = o
		}
	}
	return out
}

// TestStrictDecodingRefusesUnknownFields: the decoder the other tests
// rely on refuses a misspelt field and a duplicate key, as kubectl apply
// --validate=strict would.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	good := "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80}]\n"
	if _, err := decode([]byte(good)); err != nil {
		t.Fatalf("a valid Service: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  portz: [{port: 80}]\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nmetadata: {name: t}\n",
		"wrong type":      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: eighty}]\n",
		"unknown kind":    "apiVersion: v1\nkind: Servise\nmetadata: {name: s}\n",
	} {
		if _, err := decode([]byte(bad)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := manifests(t)
	for _, want := range []string{"Deployment/errand", "Service/errand", "Job/errand-migrate", "Secret/errand",
		"ConfigMap/errand-config", "PodDisruptionBudget/errand"} {
		if objs[want] == nil {
			t.Errorf("no %s in deploy/kubernetes", want)
		}
	}
}

// checkPod holds every pod of Errand to the same hardening: non-root, a
// read-only root, no privilege escalation, no capabilities, a seccomp
// profile, no service account token, requests and a memory limit, and
// secrets and config that exist.
func checkPod(t *testing.T, what string, spec corev1.PodSpec, objs map[string]runtime.Object) {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken should be false (Errand never calls the Kubernetes API)", what)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: the pod must run as a non-root user with the RuntimeDefault seccomp profile: %+v", what, psc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", what, len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: container %s needs readOnlyRootFilesystem, no privilege escalation and every capability dropped: %+v", what, c.Name, sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: container %s needs cpu and memory requests and a memory limit: %+v", what, c.Name, c.Resources)
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("%s: image %q floats: name a version", what, c.Image)
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			s, ok := objs["Secret/"+ref.Name].(*corev1.Secret)
			if !ok {
				t.Errorf("%s: %s names Secret %s, which is not in deploy/kubernetes", what, e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("%s: %s names key %s, which Secret %s lacks", what, e.Name, ref.Key, ref.Name)
			}
		}
	}
	for _, want := range []string{"ERRAND_SYSTEM_SECRET", "ERRAND_DATABASE_URL"} {
		if !env[want] {
			t.Errorf("%s: %s is not set", what, want)
		}
	}
	if !slices.Contains(c.Args, "--config") {
		t.Errorf("%s: args %v name no --config", what, c.Args)
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		cm, ok := objs["ConfigMap/"+v.ConfigMap.Name].(*corev1.ConfigMap)
		if !ok {
			t.Errorf("%s: volume %s names ConfigMap %s, which is not in deploy/kubernetes", what, v.Name, v.ConfigMap.Name)
			continue
		}
		for _, it := range v.ConfigMap.Items {
			if _, ok := cm.Data[it.Key]; !ok {
				t.Errorf("%s: volume %s names key %s, which ConfigMap %s lacks", what, v.Name, it.Key, cm.Name)
			}
		}
	}
}

func TestDeploymentIsHighlyAvailableAndHardened(t *testing.T) {
	objs := manifests(t)
	d, ok := objs["Deployment/errand"].(*appsv1.Deployment)
	if !ok {
		t.Fatal("no Deployment errand")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Fatalf("replicas %d, want at least 2", ptrOr(d.Spec.Replicas))
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("a rolling update should never lower the ready replicas: %+v", d.Spec.Strategy)
	}
	checkPod(t, "Deployment", d.Spec.Template.Spec, objs)
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "serve") || !slices.Contains(c.Args, "--no-migrate") {
		t.Errorf("args %v: the replicas run serve --no-migrate (the Job migrates)", c.Args)
	}
	var port int32
	for _, e := range c.Env {
		if e.Name == "ERRAND_LISTEN" {
			if !strings.HasPrefix(e.Value, "0.0.0.0:") {
				t.Errorf("ERRAND_LISTEN=%s: a pod must listen beyond loopback", e.Value)
			}
			fmt.Sscanf(strings.TrimPrefix(e.Value, "0.0.0.0:"), "%d", &port)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port || c.Ports[0].Name != "http" {
		t.Errorf("container ports %+v, want http on the listen port %d", c.Ports, port)
	}
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe: %+v, want GET %s on port http", name, p, path)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")
	sel := d.Spec.Selector.MatchLabels
	for k, v := range sel {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the selector's %s=%s is not on the pod template", k, v)
		}
	}

	pdb, ok := objs["PodDisruptionBudget/errand"].(*policyv1.PodDisruptionBudget)
	if !ok {
		t.Fatal("no PodDisruptionBudget errand")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || int32(pdb.Spec.MinAvailable.IntValue()) >= *d.Spec.Replicas {
		t.Errorf("PDB minAvailable %v: at least 1 and fewer than the %d replicas, or no drain can proceed", pdb.Spec.MinAvailable, *d.Spec.Replicas)
	}
	if fmt.Sprint(pdb.Spec.Selector.MatchLabels) != fmt.Sprint(sel) {
		t.Errorf("PDB selects %v, the Deployment %v", pdb.Spec.Selector.MatchLabels, sel)
	}
	svc, ok := objs["Service/errand"].(*corev1.Service)
	if !ok {
		t.Fatal("no Service errand")
	}
	if fmt.Sprint(svc.Spec.Selector) != fmt.Sprint(sel) {
		t.Errorf("Service selects %v, the Deployment %v", svc.Spec.Selector, sel)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service ports %+v, want one to the named port http", svc.Spec.Ports)
	}
}

func TestMigrationJobRunsMigrateAsTheSchemaOwner(t *testing.T) {
	objs := manifests(t)
	j, ok := objs["Job/errand-migrate"].(*batchv1.Job)
	if !ok {
		t.Fatal("no Job errand-migrate")
	}
	spec := j.Spec.Template.Spec
	checkPod(t, "Job", spec, objs)
	c := spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "migrate" {
		t.Errorf("args %v, want errand migrate", c.Args)
	}
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restartPolicy %q", spec.RestartPolicy)
	}
	d := objs["Deployment/errand"].(*appsv1.Deployment)
	if c.Image != d.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("the Job migrates with %s, the Deployment runs %s", c.Image, d.Spec.Template.Spec.Containers[0].Image)
	}
	for _, e := range c.Env {
		if e.Name == "ERRAND_DATABASE_URL" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != "migrate-database-url") {
			t.Errorf("the Job's ERRAND_DATABASE_URL should be the schema owner's (migrate-database-url): %+v", e)
		}
	}
}

func ptrOr(p *int32) int32 {
	if p == nil {
		return 1 // Kubernetes' default
	}
	return *p
}

// TestSecretIsATemplate: the Secret in the repository holds placeholders,
// never something that could pass for a real secret.
func TestSecretIsATemplate(t *testing.T) {
	s, ok := manifests(t)["Secret/errand"].(*corev1.Secret)
	if !ok {
		t.Fatal("no Secret errand")
	}
	if len(s.Data) > 0 {
		t.Errorf("the Secret template has base64 data: %v", s.Data)
	}
	for k, v := range s.StringData {
		if !strings.HasPrefix(v, "REPLACE") {
			t.Errorf("stringData %s = %q: a template value must start with REPLACE", k, v)
		}
	}
	if _, ok := s.StringData["system-secret"]; !ok {
		t.Error("no system-secret key")
	}
}

// TestConfigMapHoldsNoSecret: system_secret and database_url come from the
// Secret, never the ConfigMap.
func TestConfigMapHoldsNoSecret(t *testing.T) {
	cm, ok := manifests(t)["ConfigMap/errand-config"].(*corev1.ConfigMap)
	if !ok {
		t.Fatal("no ConfigMap errand-config")
	}
	cfg := cm.Data["errand.yaml"]
	var top map[string]any
	if err := yaml.UnmarshalStrict([]byte(cfg), &top); err != nil {
		t.Fatalf("errand.yaml: %v", err)
	}
	for _, k := range []string{"system_secret", "database_url"} {
		if _, ok := top[k]; ok {
			t.Errorf("errand.yaml sets %s: it belongs in the Secret", k)
		}
	}
	if !bytes.Contains([]byte(cfg), []byte("public_url:")) {
		t.Error("errand.yaml has no public_url")
	}
}
