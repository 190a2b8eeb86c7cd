package main

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// scheme knows every kind the chart may render; any other kind is an error.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	utilruntime.Must(policyv1.AddToScheme(scheme))
	utilruntime.Must(autoscalingv2.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))
}

// strict decodes into the API's Go types and rejects unknown and duplicate
// fields, as `kubectl apply --validate=strict` and the API server's
// strict field validation do.
var strict = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// manifest is one rendered Kubernetes object.
type manifest struct {
	Source string // template file it came from
	Obj    runtime.Object
}

func (m manifest) String() string {
	kind := m.Obj.GetObjectKind().GroupVersionKind().Kind
	name := ""
	if o, ok := m.Obj.(interface{ GetName() string }); ok {
		name = o.GetName()
	}
	return fmt.Sprintf("%s %s/%s", m.Source, kind, name)
}

// decodeManifests decodes each YAML document strictly into its API type.
func decodeManifests(source string, docs []string) ([]manifest, []error) {
	var out []manifest
	var errs []error
	for _, doc := range docs {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(js); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			errs = append(errs, fmt.Errorf("%s: apiVersion and kind are required", source))
			continue
		}
		obj, _, err := strict.Decode(js, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", source, u.GetKind(), u.GetName(), err))
			// A strict decoding error (unknown or duplicate fields) still
			// decodes the rest, which the other checks then see.
			if !runtime.IsStrictDecodingError(err) || obj == nil {
				continue
			}
		}
		out = append(out, manifest{Source: source, Obj: obj})
	}
	return out, errs
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// checkManifests checks what the API server would refuse, and what the
// chart promises, beyond the field types that strict decoding checks:
// required fields, names, label selectors that select the pods, ports that
// exist, volumes that are declared, a non-root read-only container, and a
// grace period that covers the shutdown delay and the drain.
func checkManifests(ms []manifest) []error {
	var c checks
	inv := c.metadata(ms)
	if len(inv.deploys) != 1 {
		return append(c.errs, fmt.Errorf("want exactly one Deployment, got %d", len(inv.deploys)))
	}
	dm := inv.deploys[0]
	d := dm.Obj.(*appsv1.Deployment)
	containerPorts := c.deployment(dm, d, inv.rendered)
	// Everything else refers to the Deployment or its pods.
	for _, m := range ms {
		c.referrer(m, dm, d, inv.services, containerPorts)
	}
	return c.errs
}

// checks collects what checkManifests finds wrong.
type checks struct{ errs []error }

func (c *checks) bad(m manifest, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", m, fmt.Sprintf(format, args...)))
}

func (c *checks) add(errs ...error) { c.errs = append(c.errs, errs...) }

// inventory is what the rendered objects hold that others refer to.
type inventory struct {
	deploys  []manifest // each one's Obj is an *appsv1.Deployment
	services []*corev1.Service
	rendered map[string]bool // "ConfigMap/name", "Secret/name"
}

// metadata checks every object's name and labels, that none is rendered
// twice, and takes the inventory.
func (c *checks) metadata(ms []manifest) inventory {
	inv := inventory{rendered: map[string]bool{}}
	seen := map[string]bool{}
	for _, m := range ms {
		acc, ok := m.Obj.(interface {
			GetName() string
			GetLabels() map[string]string
		})
		if !ok {
			c.bad(m, "has no object metadata")
			continue
		}
		kind := m.Obj.GetObjectKind().GroupVersionKind().Kind
		key := kind + "/" + acc.GetName()
		if seen[key] {
			c.bad(m, "rendered twice")
		}
		seen[key] = true
		if acc.GetName() == "" {
			c.bad(m, "metadata.name: required")
		}
		nameErrs := validation.IsDNS1123Subdomain(acc.GetName())
		if kind == "Service" {
			nameErrs = validation.IsDNS1035Label(acc.GetName())
		}
		for _, e := range nameErrs {
			c.bad(m, "metadata.name %q: %s", acc.GetName(), e)
		}
		c.add(labelErrs(m, "metadata.labels", acc.GetLabels())...)
		switch o := m.Obj.(type) {
		case *appsv1.Deployment:
			inv.deploys = append(inv.deploys, m)
		case *corev1.Service:
			inv.services = append(inv.services, o)
		case *corev1.ConfigMap:
			inv.rendered["ConfigMap/"+o.Name] = true
		case *corev1.Secret:
			inv.rendered["Secret/"+o.Name] = true
		}
	}
	return inv
}

// deployment checks the Deployment d (from dm) and returns its containers'
// named ports.
func (c *checks) deployment(dm manifest, d *appsv1.Deployment, rendered map[string]bool) map[string]int32 {
	podLabels := labels.Set(d.Spec.Template.Labels)
	containerPorts := map[string]int32{}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels)+len(d.Spec.Selector.MatchExpressions) == 0 {
		c.bad(dm, "spec.selector: required")
	} else if sel, err := metaSelector(d.Spec.Selector); err != nil {
		c.bad(dm, "spec.selector: %v", err)
	} else if !sel.Matches(podLabels) {
		c.bad(dm, "spec.selector does not select the pod template's labels %v", podLabels)
	}
	c.add(labelErrs(dm, "spec.template.metadata.labels", d.Spec.Template.Labels)...)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) == 0 {
		c.bad(dm, "spec.template.spec.containers: required")
	}
	volumes := c.volumes(dm, pod.Volumes)
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		c.bad(dm, "spec.template.spec.securityContext.runAsNonRoot: must be true")
	} else if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		c.bad(dm, "spec.template.spec.securityContext.runAsUser: must not be 0 (root)")
	}
	for i, ctr := range pod.Containers {
		c.container(dm, fmt.Sprintf("containers[%d]", i), ctr, volumes, containerPorts)
		if ctr.Name == "sluice" {
			c.add(checkSluiceArgs(dm, ctr, pod.TerminationGracePeriodSeconds)...)
		}
	}
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && !rendered["ConfigMap/"+v.ConfigMap.Name] {
			c.bad(dm, "volume %q: ConfigMap %q is not rendered by the chart", v.Name, v.ConfigMap.Name)
		}
	}
	return containerPorts
}

// volumes checks the pod's volumes and returns their names.
func (c *checks) volumes(dm manifest, vs []corev1.Volume) map[string]bool {
	volumes := map[string]bool{}
	for i, v := range vs {
		if volumes[v.Name] {
			c.bad(dm, "volumes[%d]: duplicate name %q", i, v.Name)
		}
		volumes[v.Name] = true
		for _, e := range validation.IsDNS1123Label(v.Name) {
			c.bad(dm, "volumes[%d].name %q: %s", i, v.Name, e)
		}
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name == "" {
				c.bad(dm, "volumes[%d].configMap.name: required", i)
			}
		case v.Secret != nil:
			if v.Secret.SecretName == "" {
				c.bad(dm, "volumes[%d].secret.secretName: required", i)
			}
		case v.EmptyDir != nil, v.Projected != nil:
		default:
			c.bad(dm, "volumes[%d] %q: no source, or one this check does not know", i, v.Name)
		}
	}
	return volumes
}

// container checks the container at `at` of the Deployment's pod, and adds
// its named ports to containerPorts.
func (c *checks) container(dm manifest, at string, ctr corev1.Container, volumes map[string]bool, containerPorts map[string]int32) {
	if ctr.Name == "" {
		c.bad(dm, "%s.name: required", at)
	}
	for _, e := range validation.IsDNS1123Label(ctr.Name) {
		c.bad(dm, "%s.name %q: %s", at, ctr.Name, e)
	}
	if ctr.Image == "" || strings.ContainsAny(ctr.Image, " \t") || strings.HasSuffix(ctr.Image, ":") {
		c.bad(dm, "%s.image %q: not an image reference", at, ctr.Image)
	}
	for j, p := range ctr.Ports {
		if p.Name != "" {
			for _, e := range validation.IsValidPortName(p.Name) {
				c.bad(dm, "%s.ports[%d].name %q: %s", at, j, p.Name, e)
			}
			if _, dup := containerPorts[p.Name]; dup {
				c.bad(dm, "%s.ports[%d].name %q: duplicate", at, j, p.Name)
			}
			containerPorts[p.Name] = p.ContainerPort
		}
		for _, e := range validation.IsValidPortNum(int(p.ContainerPort)) {
			c.bad(dm, "%s.ports[%d].containerPort: %s", at, j, e)
		}
	}
	for j, vm := range ctr.VolumeMounts {
		if !volumes[vm.Name] {
			c.bad(dm, "%s.volumeMounts[%d]: no volume named %q", at, j, vm.Name)
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			c.bad(dm, "%s.volumeMounts[%d].mountPath %q: must be absolute", at, j, vm.MountPath)
		}
	}
	c.probe(dm, at+".readinessProbe", ctr.ReadinessProbe, containerPorts)
	c.probe(dm, at+".livenessProbe", ctr.LivenessProbe, containerPorts)
	sc := ctr.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.bad(dm, "%s.securityContext.readOnlyRootFilesystem: must be true", at)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.bad(dm, "%s.securityContext.allowPrivilegeEscalation: must be false", at)
	}
	if sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		c.bad(dm, "%s.securityContext.runAsUser: must not be 0 (root)", at)
	}
}

// probe checks a required probe at `at`: a handler, and a port that the
// containers declare.
func (c *checks) probe(dm manifest, at string, p *corev1.Probe, containerPorts map[string]int32) {
	switch {
	case p == nil:
		c.bad(dm, "%s: required", at)
	case p.HTTPGet != nil:
		c.add(portRefErrs(dm, at+".httpGet.port", p.HTTPGet.Port.String(), containerPorts)...)
		if !strings.HasPrefix(p.HTTPGet.Path, "/") {
			c.bad(dm, "%s.httpGet.path %q: must start with /", at, p.HTTPGet.Path)
		}
	case p.TCPSocket != nil:
		c.add(portRefErrs(dm, at+".tcpSocket.port", p.TCPSocket.Port.String(), containerPorts)...)
	case p.GRPC != nil, p.Exec != nil:
	default:
		c.bad(dm, "%s: no handler", at)
	}
}

// referrer checks an object that refers to the Deployment d (from dm) or its
// pods: a Service, PodDisruptionBudget, HorizontalPodAutoscaler or
// ServiceMonitor. Any other object it leaves alone.
func (c *checks) referrer(m, dm manifest, d *appsv1.Deployment, services []*corev1.Service, containerPorts map[string]int32) {
	podLabels := labels.Set(d.Spec.Template.Labels)
	switch o := m.Obj.(type) {
	case *corev1.Service:
		if len(o.Spec.Selector) == 0 || !labels.SelectorFromSet(o.Spec.Selector).Matches(podLabels) {
			c.bad(m, "spec.selector %v does not select the Deployment's pods", o.Spec.Selector)
		}
		if len(o.Spec.Ports) == 0 {
			c.bad(m, "spec.ports: required")
		}
		for i, p := range o.Spec.Ports {
			if len(o.Spec.Ports) > 1 && p.Name == "" {
				c.bad(m, "spec.ports[%d].name: required when there are several ports", i)
			}
			for _, e := range validation.IsValidPortNum(int(p.Port)) {
				c.bad(m, "spec.ports[%d].port: %s", i, e)
			}
			c.add(portRefErrs(m, fmt.Sprintf("spec.ports[%d].targetPort", i), p.TargetPort.String(), containerPorts)...)
		}
	case *policyv1.PodDisruptionBudget:
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			c.bad(m, "spec: exactly one of minAvailable and maxUnavailable")
		}
		if sel, err := metaSelector(o.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
			c.bad(m, "spec.selector does not select the Deployment's pods")
		}
	case *autoscalingv2.HorizontalPodAutoscaler:
		c.autoscaler(m, o, dm, d)
	case *monitoringv1.ServiceMonitor:
		c.serviceMonitor(m, o, services)
	}
}

// autoscaler checks that the HorizontalPodAutoscaler scales the Deployment d
// (from dm) on metrics its pods can give, and alone.
func (c *checks) autoscaler(m manifest, o *autoscalingv2.HorizontalPodAutoscaler, dm manifest, d *appsv1.Deployment) {
	ref := o.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != d.Name {
		c.bad(m, "spec.scaleTargetRef %s %s/%s is not the Deployment %s", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	if o.Spec.MinReplicas == nil || *o.Spec.MinReplicas < 1 {
		c.bad(m, "spec.minReplicas: at least 1")
	} else if *o.Spec.MinReplicas > o.Spec.MaxReplicas {
		c.bad(m, "spec.minReplicas %d > maxReplicas %d", *o.Spec.MinReplicas, o.Spec.MaxReplicas)
	}
	if len(o.Spec.Metrics) == 0 {
		c.bad(m, "spec.metrics: required")
	}
	for i, mt := range o.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil &&
			mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
			for _, ctr := range d.Spec.Template.Spec.Containers {
				if _, ok := ctr.Resources.Requests[mt.Resource.Name]; !ok {
					c.bad(m, "spec.metrics[%d]: %s utilization needs a %s request on container %q", i, mt.Resource.Name, mt.Resource.Name, ctr.Name)
				}
			}
		}
	}
	if d.Spec.Replicas != nil {
		c.bad(dm, "spec.replicas: must be left to the HorizontalPodAutoscaler")
	}
}

// serviceMonitor checks that the ServiceMonitor scrapes /metrics on a port
// of one of the chart's Services.
func (c *checks) serviceMonitor(m manifest, o *monitoringv1.ServiceMonitor, services []*corev1.Service) {
	sel, err := metaSelector(&o.Spec.Selector)
	var svc *corev1.Service
	for _, s := range services {
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(s.Labels)) {
			svc = s
		}
	}
	if svc == nil {
		c.bad(m, "spec.selector selects none of the chart's Services")
		return
	}
	if len(o.Spec.Endpoints) == 0 {
		c.bad(m, "spec.endpoints: required")
	}
	for i, ep := range o.Spec.Endpoints {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			c.bad(m, "spec.endpoints[%d].port %q: Service %s has no such port", i, ep.Port, svc.Name)
		}
		if ep.Path != "/metrics" {
			c.bad(m, "spec.endpoints[%d].path %q: Sluice serves /metrics", i, ep.Path)
		}
	}
}

func metaSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Nothing(), errors.New("missing")
	}
	return metav1.LabelSelectorAsSelector(s)
}

func labelErrs(m manifest, at string, ls map[string]string) []error {
	var errs []error
	for k, v := range ls {
		for _, e := range validation.IsQualifiedName(k) {
			errs = append(errs, fmt.Errorf("%s: %s key %q: %s", m, at, k, e))
		}
		for _, e := range validation.IsValidLabelValue(v) {
			errs = append(errs, fmt.Errorf("%s: %s[%q] %q: %s", m, at, k, v, e))
		}
	}
	return errs
}

// portRefErrs checks a reference to a container port, by name or number.
func portRefErrs(m manifest, at, ref string, named map[string]int32) []error {
	if ref == "" || ref == "0" {
		return []error{fmt.Errorf("%s: %s: required", m, at)}
	}
	if ref[0] >= '0' && ref[0] <= '9' {
		return nil
	}
	if _, ok := named[ref]; !ok {
		return []error{fmt.Errorf("%s: %s %q: no container port has that name", m, at, ref)}
	}
	return nil
}

// checkSluiceArgs checks the gateway's command line: `serve` with the flags
// a cluster deployment needs, and a termination grace period that covers
// --shutdown-delay and --drain-timeout.
func checkSluiceArgs(m manifest, c corev1.Container, grace *int64) []error {
	var errs []error
	args := slices.Concat(c.Command, c.Args)
	if len(args) == 0 || args[0] != "serve" {
		return []error{fmt.Errorf("%s: container sluice: args must start with serve, got %q", m, args)}
	}
	flags := map[string]string{}
	for _, a := range args[1:] {
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !ok {
			errs = append(errs, fmt.Errorf("%s: container sluice: argument %q: want --flag=value", m, a))
			continue
		}
		flags[name] = val
	}
	for _, need := range []string{"config", "nats-url", "replicas"} {
		if flags[need] == "" {
			errs = append(errs, fmt.Errorf("%s: container sluice: --%s is required", m, need))
		}
	}
	var need time.Duration
	for _, f := range []string{"shutdown-delay", "drain-timeout"} {
		v, ok := flags[f]
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: container sluice: --%s=%s: %v", m, f, v, err))
		}
		need += d
	}
	if flags["drain-timeout"] == "" {
		need += 30 * time.Second // the flag's default
	}
	if grace == nil || time.Duration(*grace)*time.Second <= need {
		got := "unset (30s)"
		if grace != nil {
			got = fmt.Sprintf("%ds", *grace)
		}
		errs = append(errs, fmt.Errorf("%s: terminationGracePeriodSeconds %s does not cover --shutdown-delay plus --drain-timeout (%s) and closing", m, got, need))
	}
	return errs
}

// splitYAML splits a stream of YAML documents.
func splitYAML(b []byte) []string {
	var docs []string
	for doc := range strings.SplitSeq("\n"+string(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))), "\n---") {
		docs = append(docs, doc)
	}
	return docs
}
