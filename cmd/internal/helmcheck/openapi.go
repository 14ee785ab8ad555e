package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
)

// specDir returns api/openapi-spec/v3 of the k8s.io/kubernetes module at
// version (e.g. v1.37.2), downloading the module through the Go module
// proxy into the module cache the first time (about 21 MB).
func specDir(version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+version)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr == nil && mod.Error != "" {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: %s", version, mod.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: %w", version, err)
	}
	if mod.Dir == "" {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: no directory in %q", version, out)
	}
	return filepath.Join(mod.Dir, "api", "openapi-spec", "v3"), nil
}

// openAPI validates objects against the OpenAPI v3 documents that the
// Kubernetes API server of one version publishes, one file per group
// version (api__v1_openapi.json, apis__apps__v1_openapi.json, ...).
//
// kube-openapi's validator does not follow $ref, so each kind's schema is
// inlined, and it is tightened the way the API server's field validation
// behaves: an object schema with properties and no additionalProperties
// accepts no other field (unless it has x-kubernetes-preserve-unknown-fields).
type openAPI struct {
	dir string

	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]*spec.Schema // resolved, per kind
	files map[schema.GroupVersion]bool             // group versions loaded
}

func newOpenAPI(dir string) (*openAPI, error) {
	if _, err := os.Stat(filepath.Join(dir, "api__v1_openapi.json")); err != nil {
		return nil, fmt.Errorf("no Kubernetes OpenAPI v3 spec in %s: %w", dir, err)
	}
	return &openAPI{dir: dir, kinds: map[schema.GroupVersionKind]*spec.Schema{}, files: map[schema.GroupVersion]bool{}}, nil
}

// Validate checks obj (JSON-decoded, nulls removed) against the schema of
// gvk, returning one error per violation.
func (o *openAPI) Validate(gvk schema.GroupVersionKind, obj any) ([]error, error) {
	s, err := o.schema(gvk)
	if err != nil {
		return nil, err
	}
	res := validate.NewSchemaValidator(s, nil, "", strfmt.Default).Validate(obj)
	// A violation deep down is also reported once per enclosing allOf
	// (every $ref is wrapped in one): keep only the violation itself.
	var errs []error
	for _, e := range res.Errors {
		if !strings.Contains(e.Error(), "must validate all the schemas (allOf)") {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		errs = res.Errors
	}
	return errs, nil
}

func (o *openAPI) schema(gvk schema.GroupVersionKind) (*spec.Schema, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	gv := gvk.GroupVersion()
	if !o.files[gv] {
		if err := o.load(gv); err != nil {
			return nil, err
		}
		o.files[gv] = true
	}
	s, ok := o.kinds[gvk]
	if !ok {
		return nil, fmt.Errorf("the Kubernetes OpenAPI spec has no kind %s in %s", gvk.Kind, gv)
	}
	return s, nil
}

func (o *openAPI) load(gv schema.GroupVersion) error {
	name := "api__" + gv.Version + "_openapi.json"
	if gv.Group != "" {
		name = "apis__" + gv.Group + "__" + gv.Version + "_openapi.json"
	}
	raw, err := os.ReadFile(filepath.Join(o.dir, name))
	if err != nil {
		return fmt.Errorf("apiVersion %s is not served by this Kubernetes version: %w", gv, err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]spec.Schema `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r := resolver{defs: doc.Components.Schemas, done: map[string]spec.Schema{}, busy: map[string]bool{}}
	for defName, def := range doc.Components.Schemas {
		for _, k := range gvks(def) {
			if k.GroupVersion() != gv {
				continue
			}
			s, err := r.named(defName)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			o.kinds[k] = &s
		}
	}
	return nil
}

// gvks reads a definition's x-kubernetes-group-version-kind.
func gvks(s spec.Schema) []schema.GroupVersionKind {
	raw, ok := s.Extensions["x-kubernetes-group-version-kind"]
	if !ok {
		return nil
	}
	list, _ := raw.([]any)
	var out []schema.GroupVersionKind
	for _, e := range list {
		m, _ := e.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		out = append(out, schema.GroupVersionKind{Group: g, Version: v, Kind: k})
	}
	return out
}

// resolver inlines $refs (all local, #/components/schemas/NAME).
type resolver struct {
	defs map[string]spec.Schema
	done map[string]spec.Schema
	busy map[string]bool
}

const refPrefix = "#/components/schemas/"

func (r *resolver) named(name string) (spec.Schema, error) {
	if s, ok := r.done[name]; ok {
		return s, nil
	}
	if r.busy[name] {
		// A recursive type (only JSONSchemaProps among the built-in
		// ones): accept anything below the second occurrence.
		return spec.Schema{}, nil
	}
	def, ok := r.defs[name]
	if !ok {
		return spec.Schema{}, fmt.Errorf("$ref to missing schema %q", name)
	}
	r.busy[name] = true
	s, err := r.inline(def)
	delete(r.busy, name)
	if err != nil {
		return spec.Schema{}, err
	}
	r.done[name] = s
	return s, nil
}

func (r *resolver) inline(s spec.Schema) (spec.Schema, error) {
	if ref := s.Ref.String(); ref != "" {
		if !strings.HasPrefix(ref, refPrefix) {
			return spec.Schema{}, fmt.Errorf("unsupported $ref %q", ref)
		}
		return r.named(strings.TrimPrefix(ref, refPrefix))
	}
	var err error
	one := func(in spec.Schema) spec.Schema {
		if err != nil {
			return in
		}
		var out spec.Schema
		out, err = r.inline(in)
		return out
	}
	list := func(in []spec.Schema) []spec.Schema {
		if in == nil {
			return nil
		}
		out := make([]spec.Schema, len(in))
		for i, e := range in {
			out[i] = one(e)
		}
		return out
	}
	if s.Properties != nil {
		props := make(map[string]spec.Schema, len(s.Properties))
		for k, p := range s.Properties {
			props[k] = one(p)
		}
		s.Properties = props
	}
	if s.Items != nil {
		items := &spec.SchemaOrArray{Schemas: list(s.Items.Schemas)}
		if s.Items.Schema != nil {
			is := one(*s.Items.Schema)
			items.Schema = &is
		}
		s.Items = items
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		as := one(*s.AdditionalProperties.Schema)
		s.AdditionalProperties = &spec.SchemaOrBool{Allows: true, Schema: &as}
	}
	s.AllOf, s.AnyOf, s.OneOf = list(s.AllOf), list(s.AnyOf), list(s.OneOf)
	if s.Not != nil {
		ns := one(*s.Not)
		s.Not = &ns
	}
	if err != nil {
		return spec.Schema{}, err
	}
	if len(s.Properties) > 0 && s.AdditionalProperties == nil && s.Extensions["x-kubernetes-preserve-unknown-fields"] != true {
		s.AdditionalProperties = &spec.SchemaOrBool{Allows: false}
	}
	// Defaults are the server's business, not a constraint on input.
	s.Default = nil
	// IntOrString is {format: int-or-string, oneOf: [integer, string]}; the
	// validator would hold an integer to the format as if it were a type.
	if s.Format == "int-or-string" {
		s.Format = ""
	}
	return s, nil
}
