package main

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// renderedPod is a rendered pod template: its labels and the ports its
// containers declare.
type renderedPod struct {
	labels labels.Set
	ports  map[int32]bool
	names  map[string]bool
}

func renderedPods(objs []object) []renderedPod {
	var pods []renderedPod
	for _, o := range objs {
		_, tpl := podTemplate(o.obj)
		spec := podSpecOf(o.obj)
		if tpl == nil || spec == nil {
			continue
		}
		p := renderedPod{labels: labels.Set(tpl.Labels), ports: map[int32]bool{}, names: map[string]bool{}}
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			for _, cp := range c.Ports {
				p.ports[cp.ContainerPort] = true
				if cp.Name != "" {
					p.names[cp.Name] = true
				}
			}
		}
		pods = append(pods, p)
	}
	return pods
}

func podSpecOf(obj any) *corev1.PodSpec {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &w.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &w.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &w.Spec.Template.Spec
	case *batchv1.Job:
		return &w.Spec.Template.Spec
	}
	return nil
}

// moreCrossChecks checks the references of the objects that point at
// others by name or selector: a HorizontalPodAutoscaler's target is
// rendered and leaves replicas to it; a NetworkPolicy selects rendered
// pods, its in-namespace pod peers select rendered pods, and each port it
// opens is one those pods listen on (a rule for a port nobody declares
// opens nothing); a ServiceMonitor selects a rendered Service port.
func moreCrossChecks(objs []object, namespace string) []error {
	var errs []error
	byKey := map[key]object{}
	services := map[string]*corev1.Service{}
	for _, o := range objs {
		byKey[key{o.gvk.GroupKind().String(), o.meta.GetNamespace(), o.meta.GetName()}] = o
		if s, ok := o.obj.(*corev1.Service); ok {
			services[s.Name] = s
		}
	}
	pods := renderedPods(objs)
	matching := func(sel *metav1.LabelSelector) ([]renderedPod, error) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, err
		}
		var out []renderedPod
		for _, p := range pods {
			if s.Matches(p.labels) {
				out = append(out, p)
			}
		}
		return out, nil
	}
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *autoscalingv2.HorizontalPodAutoscaler:
			errs = append(errs, prefixed(&o, hpaErrors(w, byKey))...)
		case *networkingv1.NetworkPolicy:
			errs = append(errs, prefixed(&o, networkPolicyErrors(w, matching))...)
		case *serviceMonitor:
			errs = append(errs, prefixed(&o, serviceMonitorRefErrors(w, services, namespace))...)
		}
	}
	return errs
}

func hpaErrors(h *autoscalingv2.HorizontalPodAutoscaler, byKey map[key]object) []error {
	var errs []error
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		errs = append(errs, fmt.Errorf("minReplicas %d is above maxReplicas %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas))
	}
	ref := h.Spec.ScaleTargetRef
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return append(errs, fmt.Errorf("scaleTargetRef.apiVersion: %w", err))
	}
	target, ok := byKey[key{gv.WithKind(ref.Kind).GroupKind().String(), h.Namespace, ref.Name}]
	if !ok {
		return append(errs, fmt.Errorf("scaleTargetRef %s %s is not rendered", ref.Kind, ref.Name))
	}
	var replicas *int32
	switch t := target.obj.(type) {
	case *appsv1.Deployment:
		replicas = t.Spec.Replicas
	case *appsv1.StatefulSet:
		replicas = t.Spec.Replicas
	default:
		return append(errs, fmt.Errorf("scaleTargetRef %s is not a Deployment or StatefulSet", target))
	}
	if replicas != nil {
		errs = append(errs, fmt.Errorf("%s sets spec.replicas although this autoscaler owns it: every helm upgrade would reset the count", target))
	}
	return errs
}

func networkPolicyErrors(np *networkingv1.NetworkPolicy, matching func(*metav1.LabelSelector) ([]renderedPod, error)) []error {
	var errs []error
	selected, err := matching(&np.Spec.PodSelector)
	if err != nil {
		return []error{fmt.Errorf("spec.podSelector: %w", err)}
	}
	if len(selected) == 0 {
		return []error{fmt.Errorf("spec.podSelector selects no rendered pod template")}
	}
	// peerPods returns the rendered pods an in-namespace pod peer selects,
	// and false for peers outside the render (namespaces, IP blocks).
	peerPods := func(peer networkingv1.NetworkPolicyPeer) ([]renderedPod, bool, error) {
		if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
			return nil, false, nil
		}
		ps, err := matching(peer.PodSelector)
		return ps, true, err
	}
	portErr := func(where string, ports []networkingv1.NetworkPolicyPort, on []renderedPod) {
		for _, p := range ports {
			if p.Port == nil || p.EndPort != nil {
				continue
			}
			found := false
			for _, pod := range on {
				if p.Port.Type == intstr.Int {
					found = found || pod.ports[p.Port.IntVal]
				} else {
					found = found || pod.names[p.Port.StrVal]
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("%s: port %s is not a container port of the pods it applies to", where, p.Port.String()))
			}
		}
	}
	for i, r := range np.Spec.Ingress {
		where := fmt.Sprintf("spec.ingress[%d]", i)
		portErr(where, r.Ports, selected)
		for j, peer := range r.From {
			ps, internal, err := peerPods(peer)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s.from[%d]: %w", where, j, err))
			case internal && len(ps) == 0:
				errs = append(errs, fmt.Errorf("%s.from[%d]: podSelector selects no rendered pod template", where, j))
			}
		}
	}
	for i, r := range np.Spec.Egress {
		where := fmt.Sprintf("spec.egress[%d]", i)
		for j, peer := range r.To {
			ps, internal, err := peerPods(peer)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s.to[%d]: %w", where, j, err))
			case internal && len(ps) == 0:
				errs = append(errs, fmt.Errorf("%s.to[%d]: podSelector selects no rendered pod template", where, j))
			case internal:
				portErr(fmt.Sprintf("%s.to[%d]", where, j), r.Ports, ps)
			}
		}
	}
	return errs
}
