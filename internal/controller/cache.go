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
	"maps"
	"time"
	"unique"

	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// What the manager caches of a claim (docs/design.md, "Memory per claim"):
// not the object, but a record of what kipam reads of it
// (ipam.ClaimRecord), which a cache read rebuilds into a claim. kipam
// writes claims only by JSON merge patches computed between two copies of
// such a claim, which name only the fields that changed: a field the
// record leaves out is absent from both copies, so no patch ever writes
// it. Lists are written whole by a merge patch, so every list kipam writes
// (finalizers, status conditions) is recorded whole. Of an allocation no
// object is cached: allocations keeps a record of each.

// CacheOptions is how kipam's manager caches objects: without their
// managedFields, which kipam never reads and which take about as much
// memory as the rest of a claim; IPClaims as records of what kipam reads
// (recordClaim), and without an index by namespace (newInformer).
// IPAllocations are not cached (ClientOptions).
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&ipamv1alpha1.IPClaim{}: {Transform: recordClaim},
		},
		NewInformer: newInformer,
	}
}

// newInformer is client-go's informer, but for claims without the index
// by namespace that controller-runtime gives every namespaced kind: a set
// entry per claim (about 40 bytes) that nothing reads. kipam lists claims
// from the cache all at once or by a field index (indexWaiting,
// indexPoolCIDR), which holds the namespace in its keys; a cached list of
// one namespace's claims without a field selector fails ("index with name
// namespace does not exist"): list those through the API reader, as the
// ledger controller does.
func newInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	if _, ok := obj.(*ipamv1alpha1.IPClaim); ok {
		indexers = maps.Clone(indexers)
		delete(indexers, toolscache.NamespaceIndex)
	}
	return toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
}

// ClientOptions is how kipam's manager client reads: IPAllocations from
// the API server, never through a cache, which would hold a copy of every
// allocation (one per live claim). What kipam reads of them often, it
// reads from allocations' records.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&ipamv1alpha1.IPAllocation{}}}}
}

// recordClaim is the claims' informer's transform: the record of a
// decoded claim (ipam.RecordClaim). Anything else, a record included
// (a transform may be given what it returned), is kept as it is.
func recordClaim(o any) (any, error) {
	if c, ok := o.(*ipamv1alpha1.IPClaim); ok {
		return ipam.RecordClaim(c), nil
	}
	return o, nil
}

// cachedClaim is the claim an object of the claims' informer records (what
// its store holds, what a handler is given, or the last state of one
// deleted unseen), as a claim of its own; nil for anything else.
func cachedClaim(o any) *ipamv1alpha1.IPClaim {
	switch c := unseen(o).(type) {
	case *ipam.ClaimRecord:
		return c.Claim()
	case *ipamv1alpha1.IPClaim:
		return c.DeepCopy()
	}
	return nil
}

// unseen is the last state a deletion's tombstone holds, or o itself.
func unseen(o any) any {
	if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return o
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
