/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controller

import (
	"strings"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// What the manager caches of a claim (docs/design.md, "Memory per claim"):
// what kipam reads, and nothing else. kipam writes claims only by JSON
// merge patches computed between two copies of the cached object, which
// name only the fields that changed: a map key or a field dropped here is
// absent from both copies, so no patch ever writes it. Lists are written
// whole by a merge patch, so every list kipam writes (finalizers, status
// conditions) is cached whole. Of an allocation no object is cached:
// allocations keeps a record of each.

// kipamKeys starts every annotation kipam reads on a claim.
const kipamKeys = "ipam.kipam.dev/"

// CacheOptions is how kipam's manager caches objects: without their
// managedFields, which kipam never reads and which take about as much
// memory as the rest of a claim; IPClaims trimmed further to what kipam
// reads (trimClaim). IPAllocations are not cached (ClientOptions).
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&ipamv1alpha1.IPClaim{}: {Transform: trimClaim},
		},
	}
}

// ClientOptions is how kipam's manager client reads: IPAllocations from
// the API server, never through a cache, which would hold a copy of every
// allocation (one per live claim). What kipam reads of them often, it
// reads from allocations' records.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&ipamv1alpha1.IPAllocation{}}}}
}

// trimClaim keeps of a claim what kipam reads: its name, namespace, uid,
// resourceVersion, generation, timestamps, finalizers and kipam's own
// annotations (ipam.kipam.dev/...), its spec and its status. Its labels,
// owner references, generateName, other annotations (a kubectl
// last-applied-configuration is a copy of the whole claim) and
// managedFields are dropped. The strings many claims share (namespace,
// pool, finalizer, condition types and reasons) are shared in memory.
func trimClaim(o any) (any, error) {
	c, ok := o.(*ipamv1alpha1.IPClaim)
	if !ok {
		return o, nil
	}
	trimMeta(&c.TypeMeta, &c.ObjectMeta)
	c.Labels = nil
	var kept map[string]string
	for k, v := range c.Annotations {
		if !strings.HasPrefix(k, kipamKeys) {
			continue
		}
		if kept == nil {
			kept = make(map[string]string, len(c.Annotations))
		}
		if k == ipam.PoolAnnotation || k == ipam.SecondaryPoolAnnotation {
			v = intern(v)
		}
		kept[intern(k)] = v
	}
	c.Annotations = kept
	s := &c.Spec
	s.Pool = intern(s.Pool)
	s.IPFamily = ipamv1alpha1.IPFamily(intern(string(s.IPFamily)))
	s.IPFamilyPolicy = ipamv1alpha1.IPFamilyPolicy(intern(string(s.IPFamilyPolicy)))
	s.WhenExhausted = ipamv1alpha1.ExhaustedPolicy(intern(string(s.WhenExhausted)))
	for i := range s.Pools {
		s.Pools[i] = intern(s.Pools[i])
	}
	for i := range s.IPFamilies {
		s.IPFamilies[i] = ipamv1alpha1.IPFamily(intern(string(s.IPFamilies[i])))
	}
	st := &c.Status
	st.Pool = intern(st.Pool)
	if st.CIDR == s.CIDR {
		st.CIDR = s.CIDR // one copy of the prefix, not two
	}
	if len(st.CIDRs) == len(s.CIDRs) {
		for i := range st.CIDRs {
			if st.CIDRs[i] == s.CIDRs[i] {
				st.CIDRs[i] = s.CIDRs[i]
			}
		}
	}
	shareConditions(st.Conditions)
	return c, nil
}

// trimMeta drops what kipam reads of no cached object, and shares the
// strings every object of a kind has.
func trimMeta(t *metav1.TypeMeta, m *metav1.ObjectMeta) {
	t.APIVersion, t.Kind = intern(t.APIVersion), intern(t.Kind)
	m.ManagedFields, m.OwnerReferences, m.GenerateName = nil, nil, ""
	m.Namespace = intern(m.Namespace)
	for i := range m.Finalizers {
		m.Finalizers[i] = intern(m.Finalizers[i])
	}
}

// shareConditions shares the strings conditions repeat: type, status and
// reason. Their messages are each object's own.
func shareConditions(conds []metav1.Condition) {
	for i := range conds {
		c := &conds[i]
		c.Type, c.Reason = intern(c.Type), intern(c.Reason)
		c.Status = metav1.ConditionStatus(intern(string(c.Status)))
	}
}

// intern returns the one copy of s that every cached object repeating it
// shares (namespaces, pool names, enums): a decoded object holds a copy of
// its own of every string in it. The standard library's unique package
// keeps the table, and drops what no object refers to any more.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
