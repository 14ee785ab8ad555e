package main

import (
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	testCheckerOnce sync.Once
	testChecker     *checker
	testCheckerErr  error
)

// newTestChecker uses the real OpenAPI spec of the Kubernetes version
// matching k8s.io/api (from the module cache; downloaded once).
func newTestChecker(t *testing.T) *checker {
	t.Helper()
	testCheckerOnce.Do(func() {
		v, err := apiKubeVersion()
		if err != nil {
			testCheckerErr = err
			return
		}
		dir, err := specDir(v)
		if err != nil {
			testCheckerErr = err
			return
		}
		o, err := newOpenAPI(dir)
		if err != nil {
			testCheckerErr = err
			return
		}
		testChecker, testCheckerErr = newChecker(o)
	})
	if testCheckerErr != nil {
		t.Fatal(testCheckerErr)
	}
	return testChecker
}

const deployment = `# Source: parley/templates/edge.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: edge
  labels: {app: edge}
spec:
  replicas: 2
  selector:
    matchLabels: {app: edge}
  strategy:
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: edge}
    spec:
      containers:
        - name: edge
          image: parley:0.1.0
          ports: [{name: http, containerPort: 8080}]
          resources:
            requests: {cpu: 1, memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: edge
spec:
  selector: {app: edge}
  ports: [{name: http, port: 80, targetPort: http}]
`

func TestCheck(t *testing.T) {
	c := newTestChecker(t)
	cases := []struct {
		name      string
		old, new  string   // replace old with new in deployment
		extra     string   // appended document
		want      []string // each in the errors; none: no error
		wantCount int
	}{
		{name: "valid", wantCount: 2},
		{name: "unknown field", old: "          image:", new: "          imagee: x\n          image:",
			want: []string{`strict decoding error: unknown field "spec.template.spec.containers[0].imagee"`, "OpenAPI"}},
		{name: "duplicate field", old: "  replicas: 2\n", new: "  replicas: 2\n  replicas: 3\n",
			want: []string{`"replicas" already set`}},
		{name: "wrong type", old: "replicas: 2", new: "replicas: two",
			want: []string{"decoding:", "replicas"}},
		{name: "required field missing", old: "        - name: edge\n          image:", new: "        - image:",
			want: []string{"OpenAPI", "spec.template.spec.containers[0].name in body is required"}},
		{name: "int-or-string as bool", old: "maxUnavailable: 0", new: "maxUnavailable: true",
			want: []string{"maxUnavailable"}},
		{name: "selector does not match", old: "      labels: {app: edge}\n    spec:", new: "      labels: {app: web}\n    spec:",
			want: []string{"spec.selector", "does not match the pod template's labels", "Service edge: selector map[app:edge] matches no rendered pod template"}},
		{name: "invalid name", old: "  name: edge\n  labels", new: "  name: Edge\n  labels",
			want: []string{"metadata.name: Invalid value: \"Edge\""}},
		{name: "invalid label", old: "  labels: {app: edge}\nspec", new: "  labels: {app: \"-edge\"}\nspec",
			want: []string{"metadata.labels: Invalid value: \"-edge\""}},
		{name: "unknown kind", extra: "apiVersion: kafka.strimzi.io/v1\nkind: KafkaTopic\nmetadata: {name: t}\n",
			want: []string{`no kind "KafkaTopic" is registered`}, wantCount: 2},
		{name: "statefulset without its service", extra: `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ingest}
spec:
  serviceName: ingest-headless
  selector: {matchLabels: {app: ingest}}
  template:
    metadata: {labels: {app: ingest}}
    spec: {containers: [{name: ingest, image: parley}]}
`, want: []string{`StatefulSet ingest: serviceName "ingest-headless" is not a rendered Service`}, wantCount: 3},
		{name: "ingress to a missing port", extra: `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: edge}
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: edge, port: {name: web}}}}
`, want: []string{"backend port web is not a port of Service edge"}, wantCount: 3},
		{name: "same name twice", extra: "apiVersion: v1\nkind: Service\nmetadata: {name: edge}\nspec: {ports: [{port: 1}]}\n",
			want: []string{"same kind and name as Service edge"}, wantCount: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := deployment
			if tc.old != "" {
				if !strings.Contains(doc, tc.old) {
					t.Fatalf("%q not in the manifest", tc.old)
				}
				doc = strings.Replace(doc, tc.old, tc.new, 1)
			}
			if tc.extra != "" {
				doc += "---\n" + tc.extra
			}
			n, errs := c.check([]byte(doc))
			msg := joinErrs(errs)
			if len(tc.want) == 0 && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", msg)
			}
			if len(tc.want) > 0 && len(errs) == 0 {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("errors lack %q:\n%s", w, msg)
				}
			}
			if tc.wantCount != 0 && n != tc.wantCount {
				t.Errorf("%d objects, want %d", n, tc.wantCount)
			}
		})
	}
}

func TestExpectations(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/v.yaml"
	write(t, f, "# why\n# expect: one\nkey: 1\n  # expect:   two  \n")
	got, err := expectations(f)
	if err != nil || strings.Join(got, "|") != "one|two" {
		t.Fatalf("expectations = %q, %v", got, err)
	}
	write(t, f, "key: 1\n")
	if _, err := expectations(f); err == nil {
		t.Fatal("a file without # expect: was accepted")
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
