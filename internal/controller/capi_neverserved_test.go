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
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// A claim that carries kipam's finalizer from its create (the webhook) and
// was never served (its Cluster paused until it was deleted) goes on its
// first pass: nothing is released (it holds no entry), and the entries of
// the pool's other claims stay.
func TestANeverServedClaimGoesOnItsFirstPass(t *testing.T) {
	b, objs, _ := servedFixture(t)
	held := newAddressClaim("machine-held", "claim-uid-held", ipamv1alpha1.ClaimFinalizer)
	gone := newAddressClaim("machine-never", "claim-uid-never", ipamv1alpha1.ClaimFinalizer)
	gone.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	c := b.WithObjects(append(objs, held, gone)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	r := addressClaimReconciler(c, nil)
	answeredAddress(t, r, c, held)
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(gone)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(gone), &capiv1beta2.IPAddressClaim{}); !apierrors.IsNotFound(err) {
		t.Errorf("the never-served claim, deleted: %v; want it gone", err)
	}
	if n := entriesOf(t, c, held.UID); n != 1 {
		t.Errorf("the other claim's entries: %d, want 1", n)
	}
}
