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
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// TestDefaultMaxLedgerBytesFitsEtcd checks the premise of ErrLedgerFull on
// a real kube-apiserver and etcd: a ledger recording DefaultMaxLedgerBytes
// of entries is written, and one recording 1.6 MiB is refused by etcd
// (--max-request-bytes, 1.5 MiB by default), so a pool that did not stop at
// the bound would stop committing altogether.
func TestDefaultMaxLedgerBytesFitsEtcd(t *testing.T) {
	c := apiServer(t)
	// lines returns whole ledger lines of /24s adding up to at most n bytes.
	lines := func(n int) string {
		var b strings.Builder
		for i := 0; ; i++ {
			l := fmt.Sprintf("10.%d.%d.0/24 IPClaim/a-namespace-of-some-length %d\n", i>>8&255, i&255, 1_700_000_000+i)
			if b.Len()+len(l) > n {
				return b.String()
			}
			b.WriteString(l)
		}
	}
	ledger := func(name string, n int) *ipamv1alpha1.IPLedger {
		return &ipamv1alpha1.IPLedger{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: ipamv1alpha1.IPLedgerSpec{Pool: name, ShardBits: 26,
				Allocations: lines(n - DefaultMaxLedgerBytes/4), Shards: lines(DefaultMaxLedgerBytes / 4)},
		}
	}
	ctx := context.Background()
	if err := c.Create(ctx, ledger("at-the-bound", DefaultMaxLedgerBytes)); err != nil {
		t.Errorf("a ledger at DefaultMaxLedgerBytes was refused: %v", err)
	}
	err := c.Create(ctx, ledger("above-etcds-limit", DefaultMaxLedgerBytes*16/10))
	if err == nil || !strings.Contains(err.Error(), "request is too large") {
		t.Fatalf("a ledger of 1.6 MiB: %v, want etcd's \"request is too large\"", err)
	}
}
