/* kp_rmtree.h — remove a test's or benchmark's temporary directory tree. */
#ifndef KP_RMTREE_H
#define KP_RMTREE_H

/* Remove path and everything below it, not following links. Best effort:
 * what cannot be removed stays (a test's temp dir is not worth failing on). */
void kp_rmtree(const char *path);

#endif
