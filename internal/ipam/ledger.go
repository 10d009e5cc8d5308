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

package ipam

import (
	"cmp"
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/netutil"
)

// shardEntries is how many default-size prefixes one shard holds: a ledger
// write costs the API server more the more lines it carries, and 64 keeps a
// shard near the cost of an empty object. A power of two.
const shardEntries = 64

// DefaultBits is the prefix length of a claim on pool that asks for none:
// the pool's defaultPrefixLength, else a host. 0 for a pool without a
// usable cidr.
func DefaultBits(pool *ipamv1alpha1.IPPool) int {
	if pool.Spec.DefaultPrefixLength != nil {
		return int(*pool.Spec.DefaultPrefixLength)
	}
	p, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return 0
	}
	return p.Addr().BitLen()
}

// ShardBits is the prefix length of a new root ledger's shards for pool:
// shardEntries claims of the pool's default size fit in one. 0 means the
// pool is small enough to need no shards.
func ShardBits(pool *ipamv1alpha1.IPPool) int {
	p, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return 0
	}
	b := DefaultBits(pool) - bits.TrailingZeros(shardEntries)
	if b <= p.Bits() {
		return 0
	}
	return b
}

// ShardName is the name of shard number n of pool's root ledger.
func ShardName(pool string, n int64) string { return pool + "." + strconv.FormatInt(n, 10) }

// Entry is one committed prefix.
type Entry struct {
	// Holder is ClaimHolder(namespace) or "IPPool/<name>".
	Holder string
	// At is when it was committed (or renewed, Request.Reclaim), by the
	// committing replica's clock, to the second: for people reading the
	// ledger, and, compared only for equality, to tell an entry the
	// orphan sweep judged from one renewed since (Manager.ReleaseAsOf).
	At time.Time
	// ID names this entry among every entry the pool ever recorded for
	// the same prefix: a claim carries it (ClaimStamp), and a release
	// names it, so that a release meant for one holder cannot free the
	// same prefix committed again for another. Empty only in entries
	// written before kipam recorded IDs.
	ID string
}

// Is reports whether e is the entry of holder with id: what every release
// checks before it frees a prefix.
func (e Entry) Is(holder, id string) bool { return e.Holder == holder && e.ID == id }

// NewEntryID returns a fresh entry ID: 64 random bits in 13 characters,
// so that two entries of one prefix never share one.
func NewEntryID() string { return fmt.Sprintf("%013s", strconv.FormatUint(rand.Uint64(), 36)) }

// Release records who last held a prefix of a pool that retains released
// prefixes (spec.retainReleased): one line of a ledger's spec.released.
// While no entry holds the prefix, it is kept for Namespace and Identity
// until Until; after that, or once an entry holds it, the line only says
// who held it before.
type Release struct {
	Namespace, Identity string
	// UID is the uid of the claim that held it.
	UID string
	// Bound and Released are when the entry was committed and released,
	// by the committing replica's clock: for people, and for "oldest
	// first" among retained prefixes.
	Bound, Released, Until time.Time
	// Kept is whether the line keeps its prefix for Identity: from the
	// release until a claim takes the prefix (then the line only says who
	// held it before) or the window ends.
	Kept bool
}

// Identity is a claim's identity for retained prefixes: its namespace and
// its spec.stickyKey, or its name without one.
type Identity struct{ Namespace, Name string }

// IdentityOf is claim's identity, or nil when it has none yet (a claim
// created with generateName and no stickyKey is named after admission).
func IdentityOf(claim *ipamv1alpha1.IPClaim) *Identity {
	name := cmp.Or(claim.Spec.StickyKey, claim.Name)
	if name == "" {
		return nil
	}
	return &Identity{Namespace: claim.Namespace, Name: name}
}

// NextFree is the first moment after now when a prefix l holds back
// becomes free for any claim: a hold ends, or a retained prefix leaves its
// reuse grace (grace: the pool's) or its retention window.
func (l *Ledger) NextFree(now time.Time, grace time.Duration) (time.Time, bool) {
	var first time.Time
	consider := func(t time.Time) {
		if t.After(now) && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	for _, until := range l.Holds {
		consider(until)
	}
	for p, r := range l.Released {
		if _, kept := l.Kept(p, now); kept {
			consider(r.Released.Add(grace))
			consider(r.Until)
		}
	}
	return first, !first.IsZero()
}

// Retains reports whether pool keeps released prefixes for their claims'
// identities (spec.retainReleased).
func Retains(pool *ipamv1alpha1.IPPool) bool {
	return pool.Spec.RetainReleased != nil && pool.Spec.RetainReleased.Duration > 0
}

// RetainOf is what releasing claim's prefix from pool keeps for the
// claim's identity, or nil when the pool keeps nothing.
func RetainOf(claim *ipamv1alpha1.IPClaim, pool *ipamv1alpha1.IPPool) *Retain {
	id := IdentityOf(claim)
	if id == nil || !Retains(pool) {
		return nil
	}
	return &Retain{Namespace: id.Namespace, Identity: id.Name, UID: string(claim.UID), For: pool.Spec.RetainReleased.Duration}
}

// Retain asks a release to keep the prefix for a claim's identity.
type Retain struct {
	Namespace, Identity, UID string
	// For is how long: the pool's spec.retainReleased. At least the
	// release's reuse grace is kept either way.
	For time.Duration
}

// Ledger is what a pool's ledgers record, assembled from its root and its
// open shards.
type Ledger struct {
	// Allocations are the committed prefixes.
	Allocations map[netip.Prefix]Entry
	// Holds are released prefixes with the time they become free.
	Holds map[netip.Prefix]time.Time
	// Released are who last held each prefix released in the retention
	// window (Release).
	Released map[netip.Prefix]Release
}

// Kept reports whether r keeps p for its identity at now, in l: no entry
// holds p and the window has not ended.
func (l *Ledger) Kept(p netip.Prefix, now time.Time) (Release, bool) {
	r, ok := l.Released[p]
	if !ok || !r.Kept || !r.Until.After(now) {
		return Release{}, false
	}
	_, held := l.Allocations[p]
	return r, !held
}

// Prefixes returns the allocated prefixes in address order.
func (l *Ledger) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(l.Allocations))
	for p := range l.Allocations {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Belongs reports whether root is the root ledger of pool, and not of an
// earlier pool of the same name whose ledgers linger: what restore reads.
func Belongs(root *ipamv1alpha1.IPLedger, pool *ipamv1alpha1.IPPool) bool {
	return root.Name == pool.Name && (pool.UID == "" || PoolUID(root) == pool.UID)
}

// Assemble reads a pool's ledger from its root and the shard ledgers found
// for it: only the shards the root lists, unsealed and opened by that root,
// count. shards may hold any ledger of the pool (ListLedgers).
func Assemble(root *ipamv1alpha1.IPLedger, shards []ipamv1alpha1.IPLedger) (*Ledger, error) {
	if root == nil {
		return &Ledger{Allocations: map[netip.Prefix]Entry{}, Holds: map[netip.Prefix]time.Time{}, Released: map[netip.Prefix]Release{}}, nil
	}
	l, err := loadState(root, shards)
	if err != nil {
		return nil, err
	}
	return l.contents(), nil
}

// ownShard reports whether s is a live shard of root.
func ownShard(root, s *ipamv1alpha1.IPLedger, listed map[netip.Prefix]int64) bool {
	if s.Spec.Sealed || s.Spec.Pool != root.Spec.Pool || s.Spec.Root != string(root.UID) {
		return false
	}
	cidr, err := netip.ParsePrefix(s.Spec.Shard)
	if err != nil {
		return false
	}
	n, ok := listed[cidr]
	return ok && ShardName(root.Spec.Pool, n) == s.Name
}

// LedgerPoolField is the field a pool's ledgers are listed by: a field
// the IPLedger CRD makes selectable (+kubebuilder:selectablefield), so the
// API server filters by it, and an index of kipam's cache (IndexLedgers),
// so a cached list of one pool's ledgers reads only theirs. A list by the
// pool label would do the same on the API server but, from a cache, scan
// every pool's ledgers: a cost that grows with the number of pools, paid
// by each sweep, drain and claim (docs/design.md, "Writes per claim", its paragraph on reads).
const LedgerPoolField = "spec.pool"

// IndexLedgers registers LedgerPoolField with a cache.
func IndexLedgers(ctx context.Context, idx client.FieldIndexer) error {
	return idx.IndexField(ctx, &ipamv1alpha1.IPLedger{}, LedgerPoolField, LedgerPool)
}

// LedgerPool is a ledger's value of LedgerPoolField. A metadata-only copy
// has no spec: its pool label, set with the spec when the ledger is
// created, says the same.
func LedgerPool(o client.Object) []string {
	if l, ok := o.(*ipamv1alpha1.IPLedger); ok {
		return []string{l.Spec.Pool}
	}
	return []string{o.GetLabels()[ipamv1alpha1.LabelPool]}
}

// ListLedgers lists pool's ledgers, root and shards, from r: the API
// server (an IPLedgerList, or a metadata-only list of them), or a cache set
// up by IndexLedgers (an IPLedgerList: the index is the typed informer's).
func ListLedgers(ctx context.Context, r client.Reader, list client.ObjectList, pool string, opts ...client.ListOption) error {
	return r.List(ctx, list, append(opts, client.MatchingFields{LedgerPoolField: pool})...)
}

// ReadLedger reads a pool's ledger from r: give it the API reader for an
// exact answer, a cache for a recent one. A pool without a ledger has an
// empty one.
func ReadLedger(ctx context.Context, r client.Reader, pool string) (*Ledger, error) {
	var root ipamv1alpha1.IPLedger
	if err := r.Get(ctx, client.ObjectKey{Name: pool}, &root); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return Assemble(nil, nil)
		}
		return nil, err
	}
	var shards ipamv1alpha1.IPLedgerList
	if root.Spec.Shards != "" {
		if err := ListLedgers(ctx, r, &shards, pool); err != nil {
			return nil, err
		}
	}
	return Assemble(&root, shards.Items)
}

// NotEmpty says what the ledger still records, by holder kind, or nil
// when it records nothing.
func (l *Ledger) NotEmpty() *NotEmptyError {
	if len(l.Allocations) == 0 {
		return nil
	}
	ne := &NotEmptyError{Allocations: len(l.Allocations)}
	for _, e := range l.Allocations {
		if isClaim(e) {
			ne.Claims++
		} else {
			ne.Pools++
		}
	}
	return ne
}

// Entries returns what one ledger object, root or shard, records.
func Entries(obj *ipamv1alpha1.IPLedger) (map[netip.Prefix]Entry, error) {
	allocs, _, err := parseDoc(obj)
	return allocs, err
}

// parseDoc reads one ledger object's allocations and holds. The entries
// own their strings: a field cut from the text would keep the whole text
// of that version of the ledger alive for as long as the entry is kept (a
// Manager keeps what it restored while later versions are written), beside
// the text of the version the cache holds (docs/design.md, "Memory per
// claim").
func parseDoc(obj *ipamv1alpha1.IPLedger) (map[netip.Prefix]Entry, map[netip.Prefix]time.Time, error) {
	allocs, err := parseLines(obj, "allocation", obj.Spec.Allocations, 3, 4, func(f []string) (Entry, error) {
		e, err := entryOf(f)
		e.Holder, e.ID = intern(e.Holder), strings.Clone(e.ID)
		return e, err
	})
	if err != nil {
		return nil, nil, err
	}
	holds, err := parseHolds(obj)
	if err != nil {
		return nil, nil, err
	}
	return allocs, holds, nil
}

// parseEntries is parseDoc's allocations as a Manager's doc keeps them,
// and how many of them claims hold.
func parseEntries(obj *ipamv1alpha1.IPLedger) (es entries, claims int, err error) {
	es = newEntries(strings.Count(obj.Spec.Allocations, "\n") + 1)
	err = eachLine(obj, "allocation", obj.Spec.Allocations, 3, 4, func(p netip.Prefix, f []string) error {
		e, err := entryOf(f)
		if err != nil {
			return err
		}
		if old, ok := es.get(p); ok && isClaim(old) {
			claims-- // a line repeated: the last one counts, as in parseDoc
		}
		es.put(p, e)
		if isClaim(e) {
			claims++
		}
		return nil
	})
	return es, claims, err
}

// entryOf reads an allocation line's fields after its prefix. Its
// strings are cut from f.
func entryOf(f []string) (Entry, error) {
	at, err := strconv.ParseInt(f[2], 10, 64)
	e := Entry{Holder: f[1], At: time.Unix(at, 0)}
	if len(f) > 3 {
		e.ID = f[3]
	}
	return e, err
}

// parseHolds reads one ledger object's spec.holds.
func parseHolds(obj *ipamv1alpha1.IPLedger) (map[netip.Prefix]time.Time, error) {
	return parseLines(obj, "hold", obj.Spec.Holds, 2, 2, func(f []string) (time.Time, error) {
		until, err := strconv.ParseInt(f[1], 10, 64)
		return time.Unix(until, 0), err
	})
}

// parseReleased reads one ledger object's spec.released.
func parseReleased(obj *ipamv1alpha1.IPLedger) (map[netip.Prefix]Release, error) {
	return parseLines(obj, "released", obj.Spec.Released, 8, 8, func(f []string) (Release, error) {
		var t [3]int64
		for i := range t {
			var err error
			if t[i], err = strconv.ParseInt(f[4+i], 10, 64); err != nil {
				return Release{}, err
			}
		}
		if f[7] != lineKept && f[7] != lineTaken {
			return Release{}, fmt.Errorf("the last field is %q, not %s or %s", f[7], lineKept, lineTaken)
		}
		// Its own strings, as parseDoc's entries.
		return Release{Namespace: intern(f[1]), Identity: strings.Clone(f[2]), UID: strings.Clone(f[3]),
			Bound: time.Unix(t[0], 0), Released: time.Unix(t[1], 0), Until: time.Unix(t[2], 0), Kept: f[7] == lineKept}, nil
	})
}

func formatReleased(m map[netip.Prefix]Release) string {
	return formatLines(m, func(b *strings.Builder, _ netip.Prefix, r Release) {
		b.WriteString(releasedLine(r))
	})
}

// The last field of a released line: whether it keeps its prefix.
const (
	lineKept  = "kept"
	lineTaken = "held" // by an entry since: the line says who held it before
)

// releasedLine is r's line after its prefix. The release and the end of
// the window are rounded up to the second, like a hold's end, so that a
// grace measured from them after a restore never ends early.
func releasedLine(r Release) string {
	state := lineTaken
	if r.Kept {
		state = lineKept
	}
	return fmt.Sprintf("%s %s %s %d %d %d %s", r.Namespace, r.Identity, cmp.Or(r.UID, "-"), r.Bound.Unix(), ceilUnix(r.Released), ceilUnix(r.Until), state)
}

// ceilUnix is t in unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	if t.Nanosecond() > 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}

// intern returns the one copy of s that every entry repeating it shares:
// a holder is one per namespace or pool, repeated by every entry it holds.
func intern(s string) string { return unique.Make(s).Value() }

// parseShards reads the shards a root ledger lists.
func parseShards(root *ipamv1alpha1.IPLedger) (map[netip.Prefix]int64, error) {
	return parseLines(root, "shard", root.Spec.Shards, 2, 2, func(f []string) (int64, error) { return strconv.ParseInt(f[1], 10, 64) })
}

// storedShards is parseShards of a root as the API server stored it,
// parsed once per version: a stored version (a root's uid and
// resourceVersion) never changes. Finding which ledger records a prefix
// reads the root's list of shards, and a pool of 100,000 hosts lists about
// 1,600: parsed for every claim's event, it was a third of a restarted
// manager's CPU. The map returned is shared: read it, never change it. A
// root without a uid or a resourceVersion (never stored by an API server:
// a fake client's sets no uid) is parsed every time.
func storedShards(root *ipamv1alpha1.IPLedger) (map[netip.Prefix]int64, error) {
	if root.UID == "" || root.ResourceVersion == "" {
		return parseShards(root)
	}
	if v, ok := shardLists.Load(root.Name); ok {
		if l := v.(*shardList); l.uid == root.UID && l.version == root.ResourceVersion {
			return l.listed, l.err
		}
	}
	listed, err := parseShards(root)
	shardLists.Store(root.Name, &shardList{uid: root.UID, version: root.ResourceVersion, listed: listed, err: err})
	return listed, err
}

// shardLists holds, per root ledger's name, the last version storedShards
// parsed: one map per sharded pool, about 40 bytes a shard (a deleted
// pool's stays until a pool of its name replaces it).
var shardLists sync.Map

// shardList is one version of a root's list of shards, parsed.
type shardList struct {
	uid     types.UID
	version string
	listed  map[netip.Prefix]int64
	err     error
}

// BadLineError is a ledger line kipam cannot read: written around kipam
// (kubectl edit, a restore of an edited backup). Its pool serves nothing
// until the line is repaired, because the line may record a prefix that is
// held: kipam neither guesses what it meant nor drops it.
type BadLineError struct {
	// Ledger is the IPLedger's name, Kind the kind of line ("allocation",
	// "hold", "released", "shard").
	Ledger, Kind, Line string
	Err                error
}

func (e *BadLineError) Error() string {
	msg := fmt.Sprintf("ledger %s holds a bad %s line %q", e.Ledger, e.Kind, e.Line)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *BadLineError) Unwrap() error { return e.Err }

// parseLines reads what formatLines writes in obj (its lines of kind): one
// line per key, its prefix and then from least to most fields in all.
// value reads the rest of a line. A line that does not parse is a
// *BadLineError.
func parseLines[V any](obj *ipamv1alpha1.IPLedger, kind, s string, least, most int, value func(f []string) (V, error)) (map[netip.Prefix]V, error) {
	out := map[netip.Prefix]V{}
	err := eachLine(obj, kind, s, least, most, func(p netip.Prefix, f []string) error {
		v, err := value(f)
		if err == nil {
			out[p] = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachLine calls line with each line of kind in s, obj's text: its prefix
// and all its fields (the prefix first). A line with fewer than least or
// more than most fields, or that line refuses, is a *BadLineError.
func eachLine(obj *ipamv1alpha1.IPLedger, kind, s string, least, most int, line func(p netip.Prefix, f []string) error) error {
	bad := func(l string, err error) error {
		return &BadLineError{Ledger: obj.Name, Kind: kind, Line: l, Err: err}
	}
	for l := range strings.Lines(s) {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		p, err := netip.ParsePrefix(f[0])
		if err != nil || len(f) < least || len(f) > most {
			return bad(strings.TrimSpace(l), nil)
		}
		if err := line(p, f); err != nil {
			return bad(strings.TrimSpace(l), err)
		}
	}
	return nil
}

// formatLines writes one line per key of m, in address order.
func formatLines[V any](m map[netip.Prefix]V, line func(*strings.Builder, netip.Prefix, V)) string {
	keys := make([]netip.Prefix, 0, len(m))
	for p := range m {
		keys = append(keys, p)
	}
	slices.SortFunc(keys, comparePrefix)
	var b strings.Builder
	for _, p := range keys {
		b.WriteString(p.String())
		b.WriteByte(' ')
		line(&b, p, m[p])
		b.WriteByte('\n')
	}
	return b.String()
}

// formatHolds writes when each hold ends in whole seconds, rounded up: a
// hold may end late by under a second, never early.
func formatHolds(m map[netip.Prefix]time.Time) string {
	return formatLines(m, func(b *strings.Builder, _ netip.Prefix, t time.Time) {
		sec := t.Unix()
		if t.Nanosecond() > 0 {
			sec++
		}
		b.WriteString(strconv.FormatInt(sec, 10))
	})
}

func formatShards(m map[netip.Prefix]int64) string {
	return formatLines(m, func(b *strings.Builder, _ netip.Prefix, n int64) {
		b.WriteString(strconv.FormatInt(n, 10))
	})
}

// newRoot is the root ledger of a pool that has none yet.
func newRoot(pool *ipamv1alpha1.IPPool) *ipamv1alpha1.IPLedger {
	l := &ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: pool.Name, Labels: map[string]string{ipamv1alpha1.LabelPool: pool.Name},
			Finalizers: []string{ipamv1alpha1.LedgerFinalizer}},
		Spec: ipamv1alpha1.IPLedgerSpec{Pool: pool.Name, PoolUID: string(pool.UID), ShardBits: int32(ShardBits(pool))},
	}
	if pool.UID != "" {
		l.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPPool", Name: pool.Name, UID: pool.UID,
		}}
	}
	return l
}
