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
	"context"
	"fmt"
	"slices"
	"sync"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// allocations is what the manager keeps of each IPAllocation, in place of
// the object a controller-runtime cache would keep (docs/design.md,
// "Memory per claim"): its spec, resourceVersion, and whether its status
// or its deletion asks for a reconcile. One watch of IPAllocations fills
// it, through a client-go Reflector whose store it is, and tells the
// controllers that registered a source (source) of each change.
//
// The manager's client reads IPAllocations from the API server
// (ClientOptions): every read that needs more than this keeps (a status to
// patch, a uid to fence a delete) goes there, as do the writes. What is
// kept is as fresh as a cache would be, so whatever decided on a cached
// allocation before decides on its record now.
type allocations struct {
	lw toolscache.ListerWatcher
	// reader, when set, is read for each get instead of records (records).
	reader client.Reader

	start  sync.Once
	synced chan struct{}

	mu     sync.RWMutex
	byName map[string]allocRecord
	// byAddressClaim names the allocations of each Cluster API
	// IPAddressClaim, by "<namespace>/<name>": a claim's deletion wakes them.
	// (Mostly one a claim: a slice, not a set, which costs a few hundred
	// bytes however few it holds.)
	byAddressClaim map[string][]string
	listeners      []func(allocEvent)
}

// allocRecord is what kipam reads of an IPAllocation: its name, spec and
// resourceVersion, and two flags. It is kept in about a third of the
// memory the same fields take as strings of their own (docs/design.md,
// "Memory per claim"): the strings that are the allocation's own, one
// after another in one string, and those many allocations repeat (the
// pool, the claim's kind and namespace) as one handle they share.
type allocRecord struct {
	// own is the allocation's name, cidr, entry, claim's name, claim's
	// uid and resourceVersion, one after another; ends says where each
	// but the last ends.
	own    string
	shared unique.Handle[allocShared]
	ends   [5]uint32
	// deleting: its deletionTimestamp is set.
	deleting bool
	// quiet: its status reports no holder missing: no orphanedAt, and no
	// condition but Bound=True and Orphaned=False. An allocation is bound
	// from its creation, and its status is written only to report a holder
	// missing, and then its recovery.
	quiet bool
}

// allocShared is what an allocation's record shares with the records of
// other allocations of the same pool held in the same namespace.
type allocShared struct{ pool, kind, namespace string }

// part is the i-th of r's own strings.
func (r allocRecord) part(i int) string { return ipam.PackedPart(r.own, r.ends[:], i) }

// name is the name of the allocation r records.
func (r allocRecord) name() string { return r.part(0) }

// resourceVersion is the resourceVersion r records.
func (r allocRecord) resourceVersion() string { return r.part(5) }

// spec is the spec r records.
func (r allocRecord) spec() ipamv1alpha1.IPAllocationSpec {
	sh := r.shared.Value()
	return ipamv1alpha1.IPAllocationSpec{Pool: sh.pool, CIDR: r.part(1), Entry: r.part(2),
		ClaimRef: ipamv1alpha1.ClaimRef{Kind: sh.kind, Namespace: sh.namespace, Name: r.part(3), UID: types.UID(r.part(4))}}
}

// allocEvent is a change of the allocation called name: old is nil when it
// was added, new when it was deleted.
type allocEvent struct {
	name     string
	old, new *allocRecord
}

// newAllocations returns the records of the IPAllocations c lists and
// watches. Nothing is read until a source is started.
func newAllocations(c client.WithWatch) *allocations {
	// A client that says it cannot stream a list as watch events (a fake) is
	// listed, then watched; any other is streamed.
	return allocationsFrom(toolscache.ToListWatcherWithWatchListSemantics(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			var list ipamv1alpha1.IPAllocationList
			err := c.List(ctx, &list, &client.ListOptions{Raw: &opts, Limit: opts.Limit, Continue: opts.Continue})
			return &list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return c.Watch(ctx, &ipamv1alpha1.IPAllocationList{}, &client.ListOptions{Raw: &opts})
		},
	}, c))
}

// allocationsFrom returns the records of the IPAllocations lw lists and
// watches.
func allocationsFrom(lw toolscache.ListerWatcher) *allocations {
	return &allocations{
		lw:             lw,
		synced:         make(chan struct{}),
		byName:         map[string]allocRecord{},
		byAddressClaim: map[string][]string{},
	}
}

// recordOf is what kipam keeps of a: its own strings copied into one
// (so that none of what the decoder allocated is kept), and those
// allocations repeat shared.
func recordOf(a *ipamv1alpha1.IPAllocation) allocRecord {
	r := allocRecord{
		shared:   unique.Make(allocShared{a.Spec.Pool, a.Spec.ClaimRef.Kind, a.Spec.ClaimRef.Namespace}),
		deleting: a.DeletionTimestamp != nil,
		quiet:    quiet(&a.Status),
	}
	r.own = ipam.PackStrings(r.ends[:], a.Name, a.Spec.CIDR, a.Spec.Entry, a.Spec.ClaimRef.Name, string(a.Spec.ClaimRef.UID), a.ResourceVersion)
	return r
}

// quiet reports whether st reports no holder missing: what the reconcile
// of an allocation whose holder carries it leaves unchanged.
func quiet(st *ipamv1alpha1.IPAllocationStatus) bool {
	if st.OrphanedAt != nil {
		return false
	}
	for _, c := range st.Conditions {
		switch {
		case c.Type == ipamv1alpha1.ConditionBound && c.Status == metav1.ConditionTrue:
		case c.Type == ipamv1alpha1.ConditionOrphaned && c.Status == metav1.ConditionFalse:
		default:
			return false
		}
	}
	return true
}

// view is an IPAllocation holding what r keeps: name, resourceVersion and
// spec, and a deletionTimestamp (not the real one) when it is being
// deleted. It is for reading, and for merge patches computed between two
// copies of it, which name only what changed; never for an Update.
func (r allocRecord) view(name string) *ipamv1alpha1.IPAllocation {
	a := &ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: r.resourceVersion()}, Spec: r.spec()}
	if r.deleting {
		a.DeletionTimestamp = &metav1.Time{}
	}
	return a
}

// records is s, or when s is nil allocations that keep nothing and read
// each allocation through c: for a reconciler built without records, as
// the tests that drive one by hand against a fake client build it.
func records(s *allocations, c client.Reader) *allocations {
	if s != nil {
		return s
	}
	return &allocations{reader: c, synced: closed}
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// get returns the record of the allocation called name.
func (s *allocations) get(name string) (allocRecord, bool) {
	if s.reader != nil {
		var a ipamv1alpha1.IPAllocation
		if err := s.reader.Get(context.TODO(), client.ObjectKey{Name: name}, &a); err != nil {
			return allocRecord{}, false
		}
		return recordOf(&a), true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.byName[name]
	return r, ok
}

// ofAddressClaim names the allocations that record IPAddressClaim
// namespace/name as their holder.
func (s *allocations) ofAddressClaim(namespace, name string) []string {
	if s.reader != nil {
		var list ipamv1alpha1.IPAllocationList
		if err := s.reader.List(context.TODO(), &list); err != nil {
			return nil
		}
		var names []string
		for _, a := range list.Items {
			if ref := a.Spec.ClaimRef; ref.Kind == "IPAddressClaim" && ref.Namespace == namespace && ref.Name == name {
				names = append(names, a.Name)
			}
		}
		return names
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.byAddressClaim[namespace+"/"+name])
}

// source tells fn of every change from its start, and of every allocation
// recorded by then as added (which may reach fn after a change made since:
// fn judges each event by the record it carries, and a record told late
// is never newer than the change told before it). The first source
// started starts the watch. fn runs on the watch's goroutine, so it should
// not wait long (the allocation controller's reads a claim from the cache,
// which waits for the claims' cache to sync).
func (s *allocations) source(fn func(context.Context, allocEvent, workqueue.TypedRateLimitingInterface[reconcile.Request])) source.TypedSyncingSource[reconcile.Request] {
	return &allocSource{s: s, fn: fn}
}

type allocSource struct {
	s  *allocations
	fn func(context.Context, allocEvent, workqueue.TypedRateLimitingInterface[reconcile.Request])
}

func (src *allocSource) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	s := src.s
	if s.lw == nil {
		return nil // records that read through a client have no changes to tell
	}
	s.mu.Lock()
	s.listeners = append(s.listeners, func(e allocEvent) { src.fn(ctx, e, q) })
	known := make([]allocEvent, 0, len(s.byName))
	for name, r := range s.byName {
		known = append(known, allocEvent{name: name, new: &r})
	}
	s.mu.Unlock()
	for _, e := range known {
		src.fn(ctx, e, q)
	}
	s.start.Do(func() {
		r := toolscache.NewReflectorWithOptions(s.lw, &ipamv1alpha1.IPAllocation{}, (*allocStore)(s), toolscache.ReflectorOptions{Name: "ipallocations"})
		go r.RunWithContext(ctx)
	})
	return nil
}

func (src *allocSource) WaitForSync(ctx context.Context) error {
	select {
	case <-src.s.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("IPAllocations not listed: %w", ctx.Err())
	}
}

func (src *allocSource) String() string { return "IPAllocation records" }

// allocStore is the Reflector's store: allocations, written only by it.
type allocStore allocations

// Transformer cuts each allocation the Reflector decodes down to what
// recordOf reads before the Reflector keeps it: a list streamed as watch
// events is held whole until its end.
func (*allocStore) Transformer() toolscache.TransformFunc {
	return func(o any) (any, error) {
		a, ok := o.(*ipamv1alpha1.IPAllocation)
		if !ok {
			return o, nil
		}
		cut := &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{Name: a.Name, ResourceVersion: a.ResourceVersion, DeletionTimestamp: a.DeletionTimestamp},
			Spec:       a.Spec,
		}
		cut.Status.OrphanedAt = a.Status.OrphanedAt
		for _, c := range a.Status.Conditions {
			cut.Status.Conditions = append(cut.Status.Conditions, metav1.Condition{Type: c.Type, Status: c.Status}) // what quiet reads
		}
		return cut, nil
	}
}

func (st *allocStore) Add(obj any) error { return st.Update(obj) }
func (st *allocStore) Resync() error     { return nil }
func (st *allocStore) Update(obj any) error {
	return st.apply(func(s *allocations) []allocEvent { return s.set(obj) })
}

func (st *allocStore) Delete(obj any) error {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	a, ok := obj.(*ipamv1alpha1.IPAllocation)
	if !ok {
		return nil
	}
	return st.apply(func(s *allocations) []allocEvent { return s.drop(a.Name) })
}

// Replace takes a new list: what it lacks was deleted, what it holds at
// another resourceVersion changed.
func (st *allocStore) Replace(list []any, _ string) error {
	err := st.apply(func(s *allocations) []allocEvent {
		listed := make(map[string]struct{}, len(list))
		var events []allocEvent
		for _, obj := range list {
			if a, ok := obj.(*ipamv1alpha1.IPAllocation); ok {
				listed[a.Name] = struct{}{}
				if old, ok := s.byName[a.Name]; !ok || old.resourceVersion() != a.ResourceVersion {
					events = append(events, s.set(a)...)
				}
			}
		}
		for name := range s.byName {
			if _, ok := listed[name]; !ok {
				events = append(events, s.drop(name)...)
			}
		}
		return events
	})
	select {
	case <-st.synced:
	default:
		close(st.synced)
	}
	return err
}

// apply changes the records under the lock, then tells the listeners.
func (st *allocStore) apply(change func(*allocations) []allocEvent) error {
	s := (*allocations)(st)
	s.mu.Lock()
	events := change(s)
	listeners := s.listeners
	s.mu.Unlock()
	for _, e := range events {
		for _, l := range listeners {
			l(e)
		}
	}
	return nil
}

// set records obj; the lock is held.
func (s *allocations) set(obj any) []allocEvent {
	a, ok := obj.(*ipamv1alpha1.IPAllocation)
	if !ok {
		return nil
	}
	r := recordOf(a)
	e := allocEvent{name: a.Name, new: &r}
	if old, ok := s.byName[a.Name]; ok {
		s.unindex(a.Name, old)
		e.old = &old
	}
	s.byName[r.name()] = r // the key shares the record's memory
	if ref := r.spec().ClaimRef; ref.Kind == "IPAddressClaim" {
		key := ref.Namespace + "/" + ref.Name
		s.byAddressClaim[key] = append(s.byAddressClaim[key], r.name())
	}
	return []allocEvent{e}
}

// drop forgets the allocation called name; the lock is held.
func (s *allocations) drop(name string) []allocEvent {
	old, ok := s.byName[name]
	if !ok {
		return nil
	}
	delete(s.byName, name)
	s.unindex(name, old)
	return []allocEvent{{name: name, old: &old}}
}

func (s *allocations) unindex(name string, r allocRecord) {
	if ref := r.spec().ClaimRef; ref.Kind == "IPAddressClaim" {
		key := ref.Namespace + "/" + ref.Name
		if names := slices.DeleteFunc(s.byAddressClaim[key], func(n string) bool { return n == name }); len(names) > 0 {
			s.byAddressClaim[key] = names
		} else {
			delete(s.byAddressClaim, key)
		}
	}
}
