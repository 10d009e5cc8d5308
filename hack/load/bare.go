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

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// bareGroup serves IPClaim's schema a second time, with no webhook and no
// controller: the bare create kipam is compared with.
const bareGroup = "load.kipam.dev"

// installBare creates (or updates) the bare CRD from IPClaim's CRD file and
// waits until it is served.
func installBare(ctx context.Context, cfg *rest.Config, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w (run from the repository root, or pass -crd)", err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return err
	}
	crd.Spec.Group = bareGroup
	crd.Name = crd.Spec.Names.Plural + "." + bareGroup
	crd.Spec.Names.Categories = nil // not in `kubectl get kipam`
	crd.Spec.Names.ShortNames = nil
	crd.Annotations = nil
	cs, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crds := cs.ApiextensionsV1().CustomResourceDefinitions()
	existing, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = crds.Create(ctx, &crd, metav1.CreateOptions{})
	case err == nil:
		crd.ResourceVersion = existing.ResourceVersion
		_, err = crds.Update(ctx, &crd, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; {
		got, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not established after a minute", crd.Name)
		}
		time.Sleep(100 * time.Millisecond) // a measuring tool may poll
	}
}

// kindOf names a run's kind of object for people.
func kindOf(kind string) string {
	switch kind {
	case bare:
		return "bare CRD"
	case capiKipam:
		return "IPAddressClaim (kipam)"
	case capiInCluster:
		return "IPAddressClaim (in-cluster provider)"
	}
	return "IPClaim"
}
