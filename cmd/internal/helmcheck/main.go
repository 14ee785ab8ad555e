// Command helmcheck lints and renders a Helm chart with every values file
// kept beside it and checks what comes out, without a cluster. `make
// helm-check` runs it on helm/parley with a pinned helm.
//
// Values files in <chart>/ci:
//
//   - *.yaml: `helm lint --strict` and `helm template` must pass, and every
//     rendered object must decode strictly (unknown or duplicate fields are
//     errors) into its k8s.io/api type, validate against the OpenAPI v3
//     schema of the pinned Kubernetes version (k8s.io/kubernetes's
//     api/openapi-spec, read from the Go module cache), have valid names,
//     labels and annotations, selectors that match their pod templates, and
//     Service references (StatefulSet serviceName, Ingress backends,
//     Service and PodDisruptionBudget selectors) that resolve within the
//     render.
//   - bad/*.yaml: helm must refuse the values, in lint and in template, with
//     a message containing the text of each "# expect: TEXT" line.
//   - bad-render/*.yaml: helm renders them, and the checks above must report
//     each "# expect: TEXT".
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

func main() {
	helm := flag.String("helm", "helm", "helm binary")
	chart := flag.String("chart", "helm/parley", "chart directory; values files are read from its ci/ folder")
	kubeVersion := flag.String("kube-version", "", "Kubernetes version: helm's --kube-version and the k8s.io/kubernetes module whose OpenAPI spec is used (default: the one matching k8s.io/api in cmd/go.mod)")
	openapiDir := flag.String("openapi-dir", "", "OpenAPI v3 spec directory (default: api/openapi-spec/v3 of k8s.io/kubernetes@kube-version from the module cache)")
	flag.Parse()
	if err := run(*helm, *chart, *kubeVersion, *openapiDir); err != nil {
		fmt.Fprintln(os.Stderr, "helmcheck:", err)
		os.Exit(1)
	}
}

func run(helm, chart, kubeVersion, openapiDir string) error {
	start := time.Now()
	if kubeVersion == "" {
		v, err := apiKubeVersion()
		if err != nil {
			return err
		}
		kubeVersion = v
	}
	if openapiDir == "" {
		dir, err := specDir(kubeVersion)
		if err != nil {
			return err
		}
		openapiDir = dir
	}
	schemas, err := newOpenAPI(openapiDir)
	if err != nil {
		return err
	}
	c, err := newChecker(schemas)
	if err != nil {
		return err
	}
	h := helmRunner{bin: helm, chart: chart, kubeVersion: strings.TrimPrefix(kubeVersion, "v")}
	if out, err := exec.Command(helm, "version", "--short").CombinedOutput(); err != nil {
		return fmt.Errorf("%s version: %v: %s", helm, err, out)
	} else {
		fmt.Printf("helm %s, Kubernetes %s OpenAPI schema, chart %s\n", strings.TrimSpace(string(out)), kubeVersion, chart)
	}

	ci := filepath.Join(chart, "ci")
	good, _ := filepath.Glob(filepath.Join(ci, "*.yaml"))
	bad, _ := filepath.Glob(filepath.Join(ci, "bad", "*.yaml"))
	badRender, _ := filepath.Glob(filepath.Join(ci, "bad-render", "*.yaml"))
	if len(good) == 0 || len(bad) == 0 {
		return fmt.Errorf("no values files in %s/*.yaml or %s/bad/*.yaml", ci, ci)
	}

	var failed []string
	fail := func(file string, format string, args ...any) {
		msg := fmt.Sprintf("FAIL %s: %s", file, fmt.Sprintf(format, args...))
		fmt.Println(msg)
		failed = append(failed, msg)
	}
	objects := 0
	for _, f := range good {
		if out, err := h.lint(f); err != nil {
			fail(f, "helm lint --strict: %v\n%s", err, indent(out))
			continue
		}
		manifests, err := h.template(f)
		if err != nil {
			fail(f, "helm template: %v", err)
			continue
		}
		n, kinds, errs := c.checkCounting(manifests)
		if len(errs) > 0 {
			fail(f, "%d problem(s) in %d rendered objects:\n%s", len(errs), n, indent([]byte(joinErrs(errs))))
			continue
		}
		objects += n
		fmt.Printf("ok   %s: lint --strict, %d objects (%s)\n", f, n, kinds)
	}
	for _, f := range bad {
		expect, err := expectations(f)
		if err != nil {
			fail(f, "%v", err)
			continue
		}
		// helm lint renders in lint mode, where the template function
		// `fail` (the chart's check of required values) only logs an
		// "[INFO] Fail: ..." line: lint must refuse the values or log
		// that line. helm template (and install) must refuse them.
		lintOut, lintErr := h.lint(f)
		_, tplErr := h.template(f)
		switch {
		case tplErr == nil:
			fail(f, "helm template accepted values that must be refused")
		case len(missingFrom(tplErr.Error(), expect)) > 0:
			fail(f, "helm template refused them, but without %q:\n%s", missingFrom(tplErr.Error(), expect), indent([]byte(tplErr.Error())))
		case lintErr == nil && len(missingFrom(string(lintOut), expect)) > 0:
			fail(f, "helm lint --strict accepted them without reporting %q:\n%s", missingFrom(string(lintOut), expect), indent(lintOut))
		default:
			how := "lint and template refuse"
			if lintErr == nil {
				how = "template refuses, lint reports"
			}
			fmt.Printf("ok   %s: %s: %s\n", f, how, lastLine(tplErr.Error()))
		}
	}
	for _, f := range badRender {
		expect, err := expectations(f)
		if err != nil {
			fail(f, "%v", err)
			continue
		}
		manifests, err := h.template(f)
		if err != nil {
			fail(f, "helm template (these values must render, for the checks to refuse them): %v", err)
			continue
		}
		_, _, errs := c.checkCounting(manifests)
		msg := joinErrs(errs)
		switch {
		case len(errs) == 0:
			fail(f, "the checks found nothing wrong in a render they must refuse")
		case len(missingFrom(msg, expect)) > 0:
			fail(f, "refused, but without %q:\n%s", missingFrom(msg, expect), indent([]byte(msg)))
		default:
			fmt.Printf("ok   %s: refused: %s\n", f, firstLine(msg))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d values files failed", len(failed), len(good)+len(bad)+len(badRender))
	}
	fmt.Printf("helm-check: %d values files rendered (%d objects checked), %d refused as expected, in %.1fs\n",
		len(good), objects, len(bad)+len(badRender), time.Since(start).Seconds())
	return nil
}

// apiKubeVersion is the Kubernetes release of the k8s.io/api module this
// program is built with (v0.37.2 is Kubernetes v1.37.2), so that the Go
// types and the OpenAPI schema are of one version, pinned in cmd/go.mod.
func apiKubeVersion() (string, error) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "", errors.New("no build info: pass -kube-version")
	}
	for _, dep := range info.Deps {
		if dep.Path != "k8s.io/api" {
			continue
		}
		if rest, ok := strings.CutPrefix(dep.Version, "v0."); ok {
			return "v1." + rest, nil
		}
		return "", fmt.Errorf("k8s.io/api %s is not a v0.X.Y release: pass -kube-version", dep.Version)
	}
	return "", errors.New("k8s.io/api is not in the build info: pass -kube-version")
}

// checkCounting runs check and summarises the kinds rendered.
func (c *checker) checkCounting(manifests []byte) (int, string, []error) {
	n, errs := c.check(manifests)
	counts := map[string]int{}
	// Cheap second pass over the "kind:" lines of the top level, for the
	// summary only.
	for _, line := range strings.Split(string(manifests), "\n") {
		if k, ok := strings.CutPrefix(line, "kind: "); ok {
			counts[strings.TrimSpace(k)]++
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return n, strings.Join(parts, ", "), errs
}

type helmRunner struct {
	bin, chart, kubeVersion string
}

const release, namespace = "parley", "parley"

func (h helmRunner) lint(values string) ([]byte, error) {
	cmd := exec.Command(h.bin, "lint", "--strict", "--kube-version", h.kubeVersion, "--namespace", namespace, "-f", values, h.chart)
	out, err := cmd.CombinedOutput()
	return out, err
}

func (h helmRunner) template(values string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(h.bin, "template", release, h.chart, "--kube-version", h.kubeVersion, "--namespace", namespace, "-f", values)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// expectations reads the "# expect: TEXT" lines of a values file.
func expectations(file string) ([]string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "# expect:"); ok && strings.TrimSpace(e) != "" {
			out = append(out, strings.TrimSpace(e))
		}
	}
	if len(out) == 0 {
		return nil, errors.New(`no "# expect: TEXT" line saying how the values must be refused`)
	}
	return out, nil
}

func missingFrom(msg string, expect []string) []string {
	var missing []string
	for _, e := range expect {
		if !strings.Contains(msg, e) {
			missing = append(missing, e)
		}
	}
	return missing
}

func joinErrs(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

func indent(b []byte) string {
	s := strings.TrimRight(string(b), "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// lastLine is the last non-empty line, where helm puts the reason.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "Use --debug") {
			return l
		}
	}
	return ""
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
