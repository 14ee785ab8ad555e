package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The kinds a chart may render. Anything else fails the check until its
// k8s.io/api package is added here.
var addToScheme = []func(*runtime.Scheme) error{
	corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
	networkingv1.AddToScheme, autoscalingv2.AddToScheme, rbacv1.AddToScheme,
}

// checker checks rendered manifests: each object decodes strictly into
// its k8s.io/api type and validates against the Kubernetes OpenAPI schema,
// and the objects fit together the way the API server and controllers
// need (names, labels, selectors, Service references).
type checker struct {
	decoder runtime.Decoder
	schemas *openAPI
}

func newChecker(schemas *openAPI) (*checker, error) {
	scheme := runtime.NewScheme()
	for _, add := range addToScheme {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	// Strict: unknown and duplicate fields are errors, not dropped.
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Strict: true})
	return &checker{decoder: dec, schemas: schemas}, nil
}

// object is one decoded manifest.
type object struct {
	source string // "# Source:" comment helm writes before each document
	gvk    schema.GroupVersionKind
	obj    runtime.Object
	meta   metav1.Object
}

func (o object) String() string {
	s := fmt.Sprintf("%s %s", o.gvk.Kind, o.meta.GetName())
	if o.source != "" {
		s += " (" + o.source + ")"
	}
	return s
}

// check returns every problem found in a multi-document YAML stream and
// the number of objects in it.
func (c *checker) check(manifests []byte) (int, []error) {
	var errs []error
	var objs []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return len(objs), append(errs, fmt.Errorf("splitting the manifests: %w", err))
		}
		o, docErrs := c.document(doc)
		errs = append(errs, docErrs...)
		if o != nil {
			objs = append(objs, *o)
		}
	}
	errs = append(errs, crossCheck(objs)...)
	errs = append(errs, moreCrossChecks(objs, namespace)...)
	return len(objs), errs
}

func sourceOf(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return ""
}

// document checks one YAML document; it returns nil for an empty one.
func (c *checker) document(doc []byte) (*object, []error) {
	src := sourceOf(doc)
	where := func(err error) error {
		if src == "" {
			return err
		}
		return fmt.Errorf("%s: %w", src, err)
	}
	// Strict YAML: duplicate keys are errors.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, []error{where(fmt.Errorf("invalid YAML: %w", err))}
	}
	if s := string(bytes.TrimSpace(js)); s == "null" || s == "" {
		return nil, nil
	}
	var generic any
	if err := utiljson.Unmarshal(js, &generic); err != nil {
		return nil, []error{where(fmt.Errorf("invalid JSON from YAML: %w", err))}
	}
	top, ok := generic.(map[string]any)
	if !ok {
		return nil, []error{where(fmt.Errorf("a manifest must be a mapping, got %T", generic))}
	}
	apiVersion, _ := top["apiVersion"].(string)
	kind, _ := top["kind"].(string)
	if gv, err := schema.ParseGroupVersion(apiVersion); err == nil && gv.Group == monitoringGroup {
		return monitoringDocument(js, gv.WithKind(kind), src)
	}

	obj, gvk, err := c.decoder.Decode(js, nil, nil)
	if err != nil {
		if runtime.IsNotRegisteredError(err) || runtime.IsMissingKind(err) || runtime.IsMissingVersion(err) {
			return nil, []error{where(fmt.Errorf("%w (helmcheck knows the kinds of k8s.io/api it registers in check.go)", err))}
		}
		// A strict decoding error still returns the object.
		if obj == nil || !runtime.IsStrictDecodingError(err) {
			return nil, []error{where(fmt.Errorf("decoding: %w", err))}
		}
	}
	var errs []error
	m, merr := metaOf(obj)
	if merr != nil {
		return nil, []error{where(merr)}
	}
	o := &object{source: src, gvk: *gvk, obj: obj, meta: m}
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: strict decoding into %T: %w", o, obj, err))
	}

	schemaErrs, err := c.schemas.Validate(*gvk, dropNulls(generic))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", o, err))
	}
	for _, e := range schemaErrs {
		errs = append(errs, fmt.Errorf("%s: OpenAPI: %w", o, e))
	}

	for _, e := range metaErrors(o) {
		errs = append(errs, fmt.Errorf("%s: %w", o, e))
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		errs = append(errs, prefixed(o, configMapErrors(cm))...)
	}
	return o, errs
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// dropNulls removes null map values, which the API server treats as
// absent, so that the schema sees what the server keeps.
func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			t[k] = dropNulls(e)
		}
	case []any:
		for i, e := range t {
			t[i] = dropNulls(e)
		}
	}
	return v
}

// metaErrors checks names, labels and annotations of an object and of the
// pod template it carries, as the API server validates them.
func metaErrors(o *object) []error {
	var errs field.ErrorList
	name := o.meta.GetName()
	switch {
	case name == "":
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	case o.gvk.Kind == "Service":
		for _, msg := range validation.IsDNS1035Label(name) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
	default:
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
	}
	if o.gvk.Kind == "StatefulSet" {
		// The controller labels each pod controller-revision-hash=<name>-<hash>
		// (up to 11 more characters), a label value of at most 63.
		if len(name) > 52 {
			errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), name, 52))
		}
	}
	meta := func(path *field.Path, l map[string]string, a map[string]string) {
		errs = append(errs, metav1validation.ValidateLabels(l, path.Child("labels"))...)
		errs = append(errs, apivalidation.ValidateAnnotations(a, path.Child("annotations"))...)
	}
	meta(field.NewPath("metadata"), o.meta.GetLabels(), o.meta.GetAnnotations())
	if sel, tpl := podTemplate(o.obj); tpl != nil {
		p := field.NewPath("spec", "template", "metadata")
		meta(p, tpl.Labels, tpl.Annotations)
		if sel != nil {
			s, err := metav1.LabelSelectorAsSelector(sel)
			switch {
			case err != nil:
				errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), sel, err.Error()))
			case s.Empty():
				errs = append(errs, field.Required(field.NewPath("spec", "selector"), "an empty selector selects every pod"))
			case !s.Matches(labels.Set(tpl.Labels)):
				errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), s.String(), "does not match the pod template's labels"))
			}
		}
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

// podTemplate returns a workload's selector (nil for a Job, whose selector
// the server generates) and pod template metadata.
func podTemplate(obj runtime.Object) (*metav1.LabelSelector, *metav1.ObjectMeta) {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return w.Spec.Selector, &w.Spec.Template.ObjectMeta
	case *appsv1.StatefulSet:
		return w.Spec.Selector, &w.Spec.Template.ObjectMeta
	case *appsv1.DaemonSet:
		return w.Spec.Selector, &w.Spec.Template.ObjectMeta
	case *batchv1.Job:
		return nil, &w.Spec.Template.ObjectMeta
	}
	return nil, nil
}

type key struct {
	kind, namespace, name string
}

// crossCheck checks references between the rendered objects: no two
// objects of a kind share a name, a StatefulSet's serviceName is a
// rendered headless Service, every Service and PodDisruptionBudget selects
// some rendered pod template, and an Ingress routes to a rendered Service
// port.
func crossCheck(objs []object) []error {
	var errs []error
	seen := map[key]object{}
	services := map[string]*corev1.Service{}
	var pods []map[string]string
	for _, o := range objs {
		k := key{o.gvk.GroupKind().String(), o.meta.GetNamespace(), o.meta.GetName()}
		if prev, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("%s: same kind and name as %s", o, prev))
		}
		seen[k] = o
		if s, ok := o.obj.(*corev1.Service); ok {
			services[s.Name] = s
		}
		if _, tpl := podTemplate(o.obj); tpl != nil {
			pods = append(pods, tpl.Labels)
		}
	}
	selectsPods := func(sel labels.Selector) bool {
		for _, l := range pods {
			if sel.Matches(labels.Set(l)) {
				return true
			}
		}
		return false
	}
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.StatefulSet:
			svc, ok := services[w.Spec.ServiceName]
			switch {
			case w.Spec.ServiceName == "":
			case !ok:
				errs = append(errs, fmt.Errorf("%s: serviceName %q is not a rendered Service", o, w.Spec.ServiceName))
			case svc.Spec.ClusterIP != corev1.ClusterIPNone:
				errs = append(errs, fmt.Errorf("%s: serviceName %q is not a headless Service (clusterIP: None)", o, w.Spec.ServiceName))
			}
		case *corev1.Service:
			if len(w.Spec.Selector) > 0 && !selectsPods(labels.SelectorFromSet(w.Spec.Selector)) {
				errs = append(errs, fmt.Errorf("%s: selector %v matches no rendered pod template", o, w.Spec.Selector))
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(w.Spec.Selector)
			if err == nil && !selectsPods(sel) {
				errs = append(errs, fmt.Errorf("%s: selector %s matches no rendered pod template", o, sel))
			}
		case *networkingv1.Ingress:
			for _, rule := range w.Spec.Rules {
				if rule.HTTP == nil {
					continue
				}
				for _, p := range rule.HTTP.Paths {
					if err := backendErr(p.Backend, services); err != nil {
						errs = append(errs, fmt.Errorf("%s: path %s: %w", o, p.Path, err))
					}
				}
			}
			if w.Spec.DefaultBackend != nil {
				if err := backendErr(*w.Spec.DefaultBackend, services); err != nil {
					errs = append(errs, fmt.Errorf("%s: default backend: %w", o, err))
				}
			}
		}
	}
	return errs
}

func backendErr(b networkingv1.IngressBackend, services map[string]*corev1.Service) error {
	if b.Service == nil {
		return nil
	}
	svc, ok := services[b.Service.Name]
	if !ok {
		return fmt.Errorf("backend Service %q is not rendered", b.Service.Name)
	}
	for _, p := range svc.Spec.Ports {
		if (b.Service.Port.Name != "" && p.Name == b.Service.Port.Name) ||
			(b.Service.Port.Number != 0 && p.Port == b.Service.Port.Number) {
			return nil
		}
	}
	port := b.Service.Port.Name
	if port == "" {
		port = fmt.Sprint(b.Service.Port.Number)
	}
	return errors.New("backend port " + port + " is not a port of Service " + svc.Name)
}
