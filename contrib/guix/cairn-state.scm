;;; cairn-state.scm — an EXAMPLE of wiring cairn's state shim into a Guix System service.
;;;
;;; Not tested against Guix here: cairn's own tests drive `cairn state` directly against a
;;; real MariaDB. Read it as a sketch of where the two calls go.
;;;
;;; The idea: a Shepherd service for Drupal gets two actions, `state-dump` and `state-load`,
;;; which call cairn with the revision the service runs. The revision is the store path of
;;; the service's code (its hash identifies the revision exactly). Around a `guix system
;;; reconfigure` (or a roll-back with `guix system roll-back`):
;;;
;;;   herd state-dump drupal          # before: save the state of the running revision
;;;   guix system reconfigure ...     # new code; the service restarts and may migrate state
;;;   herd state-load drupal          # after: load the state of the revision now active,
;;;                                   # if there is one (a roll-back); else nothing happens
;;;
;;; or, equivalently, `cairn state transition drupal --to NEW-REVISION` in one step.

(define-module (cairn-state)
  #:use-module (gnu services)
  #:use-module (gnu services shepherd)
  #:use-module (guix gexp)
  #:export (cairn-state-actions))

(define* (cairn-state-actions service-name revision
                              #:key (cairn "/run/current-system/profile/bin/cairn")
                                    (config "/etc/cairn/cairn.toml"))
  "Return Shepherd actions `state-dump' and `state-load' for SERVICE-NAME, whose state
belongs to REVISION (a string, e.g. the store file name of the service's package)."
  (list
   (shepherd-action
    (name 'state-dump)
    (documentation "Snapshot this service's state, labelled with its revision.")
    (procedure
     #~(lambda (running . args)
         (zero? (system* #$cairn "--config" #$config "state" "dump"
                         #$service-name "--revision" #$revision)))))
   (shepherd-action
    (name 'state-load)
    (documentation "Load the state of this revision, if cairn has any (roll-back).")
    (procedure
     #~(lambda (running . args)
         (zero? (system* #$cairn "--config" #$config "state" "load"
                         #$service-name "--revision" #$revision)))))))

;;; Use it in a shepherd-service:
;;;
;;;   (shepherd-service
;;;     (provision '(drupal))
;;;     (start #~(make-forkexec-constructor ...))
;;;     (stop  #~(make-kill-destructor))
;;;     (actions (cairn-state-actions "drupal" drupal-revision)))
;;;
;;; where drupal-revision is a string naming the code the service runs, e.g. the
;;; package's version and commit as your operating-system definition knows them.
;;;
;;; and in /etc/cairn/cairn.toml give the service's state (see cairn's README):
;;;
;;;   [service.drupal]
;;;   stop  = "herd stop drupal"
;;;   start = "herd start drupal"
;;;   [[service.drupal.state]]
;;;   name = "sites"
;;;   path = "/var/lib/drupal/sites"
;;;   [[service.drupal.state]]
;;;   name = "db"
;;;   dump = "mysqldump --single-transaction --add-drop-database --databases drupal"
;;;   load = "mysql"
